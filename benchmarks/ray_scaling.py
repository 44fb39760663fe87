"""Scaling of a surface grid on Ray: local backend vs Ray with 1 and 2 workers.

The same barycentric plane (default 31 x 31 = 961 points) of a digits CNN (``cnn-small``,
three seeded initializations as anchors, BN policy ``recompute``) on 1,024 training examples is
computed with :class:`~lossurf.backends.LocalBackend` and with a fresh local Ray instance of
1 and of 2 CPUs (``num_cpus=1`` per task, one torch thread per worker), at the default chunk
size (32 points, rounded to whole rows: one row of 31 points per task). Every result must equal
the local one exactly.

Printed per setting: wall time of the map (Ray start-up excluded; a warm-up map first starts
the worker processes), speedup over one worker and over local, and Ray's overhead per task:
``(wall * workers - sum of task times inside the workers) / tasks``, i.e. what each task cost
its worker slot beyond running ``fn`` (scheduling, (de)serialization, transfers, idling), as a
fraction of the mean task time. Best of ``--rounds`` rounds, because the machine is shared;
``cpu/wall in tasks`` below 1 means the workers waited for a core (other load on the node);
an unchanged ``cpu/task`` from 1 to 2 workers then means Ray added no work, only the cores were
missing.

    python benchmarks/ray_scaling.py [--steps 31] [--examples 1024] [--rounds 2] [--quick]

Targets: 2 workers >= 1.7x one worker; overhead per task < 5 % of task time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lossurf.backends import LocalBackend, RayBackend
from lossurf.config import DataSpec, ModelSpec
from lossurf.data import load
from lossurf.models import build
from lossurf.surface.evaluate import EvalData, Evaluator
from lossurf.surface.plane import barycentric_grid
from lossurf.surface.store import compute_surface


def setup(steps: int, examples: int):
    dataset = load(DataSpec(name="digits"))
    spec = ModelSpec(name="cnn-small", options=dataset.model_options())
    model = build(spec, seed=0)
    anchors = [build(spec, seed=s).state_dict() for s in (0, 1, 2)]
    data = EvalData.from_dataset(dataset, split="train", subset=examples, seed=0)
    return (model, data), anchors, barycentric_grid(steps=steps)


def timed_map(problem, anchors, grid, backend, chunk_points: int):
    # A fresh evaluator per map, as the surface API makes one per call: a used one holds
    # prepared (fx-rewritten) runners, which are caches that do not pickle.
    evaluator = Evaluator(*problem, bn="recompute", device="cpu", compile=False)
    began = time.perf_counter()
    ds = compute_surface(evaluator, anchors, grid, backend=backend, chunk_points=chunk_points,
                         progress=False)
    return time.perf_counter() - began, ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=31, help="grid steps per side (default 31)")
    parser.add_argument("--examples", type=int, default=1024, help="evaluated examples (1024)")
    parser.add_argument("--chunk-points", type=int, default=32, help="points per task (32)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds, best kept (2)")
    parser.add_argument("--quick", action="store_true", help="11 x 11 grid, 256 examples, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.examples, args.rounds = 11, 256, 1

    import ray

    torch.set_num_threads(1)
    problem, anchors, grid = setup(args.steps, args.examples)
    print(f"grid {args.steps}x{args.steps} = {grid.num_points} points, {args.examples} examples, "
          f"chunk_points={args.chunk_points}, model cnn-small, torch threads 1 per worker")

    local_times = []
    for _ in range(args.rounds):
        seconds, reference = timed_map(problem, anchors, grid, LocalBackend(), args.chunk_points)
        local_times.append(seconds)
    local = min(local_times)
    print(f"local         wall {local:7.2f} s")

    rows = {}
    for workers in (1, 2):
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            backend = RayBackend(num_cpus=1)
            list(backend.map(abs, range(4 * workers)))  # start the worker processes
            best = None
            for _ in range(args.rounds):
                seconds, ds = timed_map(problem, anchors, grid, backend, args.chunk_points)
                if not ds.identical(reference):
                    raise SystemExit(f"Ray with {workers} worker(s) differs from the local result")
                stats = backend.stats
                if best is None or seconds < best[0]:
                    best = (seconds, stats)
        finally:
            ray.shutdown()
        seconds, stats = best
        mean_task = float(np.mean(stats.task_seconds))
        overhead = stats.overhead_per_task(workers)
        rows[workers] = seconds
        print(f"ray {workers} worker{'s' if workers > 1 else ' '}  wall {seconds:7.2f} s  "
              f"x{local / seconds:4.2f} vs local  tasks {len(stats.task_seconds)}  "
              f"task {mean_task * 1e3:7.1f} ms  overhead/task {overhead * 1e3:6.1f} ms "
              f"({100 * overhead / mean_task:4.1f} %)  workers seen {len(stats.workers)}  "
              f"cpu/wall in tasks {sum(stats.task_cpu_seconds) / sum(stats.task_seconds):.2f}  "
              f"cpu/task {1e3 * float(np.mean(stats.task_cpu_seconds)):6.1f} ms")
    speedup = rows[1] / rows[2]
    print(f"speedup 2 workers vs 1: x{speedup:.2f} (target >= 1.7)")


if __name__ == "__main__":
    main()
