"""Grid points per second of ``lossurf.surface.plane`` as a user calls it, against loss-landscapes.

Both run in this one process, on the same model, anchor weights and evaluation examples:

- **loss-landscapes 3.0.6** (``pip install -r benchmarks/requirements-bench.txt``):
  ``planar_interpolation(start, end_one, end_two, Loss(cross_entropy, x, y), steps)``, the
  models in eval mode, as its README calls it;
- **lossurf**: ``lossurf.surface.plane(model, anchors, data, steps=..., progress=False)`` with
  default settings (barycentric plane, BN ``recompute``, threads, strategy, batch size and
  compilation chosen by lossurf), and the same with ``bn="interpolate"``.

The peer is also timed at one thread: on a machine loaded by other processes its default two
threads can be several times slower than one, and the last ratio column compares lossurf's
default with the faster of the two. A point is the loss over the whole evaluation set. Each timing is one whole call (a fresh
evaluator: preparation and any compilation included). Rounds interleave the three calls per
workload; the table reports medians over rounds, and ratios of medians. ``recompute`` is also
compared with ``interpolate`` plus the statistics passes alone (timed on the evaluator's own
statistics graph, compiled as the API compiled it). The machine's load average is printed
before and after: on a shared machine only ratios measured within one run mean anything.

    python benchmarks/surface.py [--rounds 3] [--only W1,W3] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F

import lossurf.surface as surface
from lossurf.config import DataSpec, ModelSpec
from lossurf.data import load
from lossurf.models import build
from lossurf.surface.evaluate import EvalData, Evaluator
from lossurf.threads import torch_threads


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def workloads(quick: bool):
    """``(key, name, spec, data source, grid steps)``: the issue's W1-W3."""
    g = torch.Generator().manual_seed(0)
    cifar = EvalData(torch.randn(2048, 3, 32, 32, generator=g),
                     torch.randint(0, 10, (2048,), generator=g), "classification",
                     torch.randn(1024, 3, 32, 32, generator=g))
    mlp = EvalData(torch.randn(10_000, 784, generator=g),
                   torch.randint(0, 10, (10_000,), generator=g), "classification",
                   torch.randn(1024, 784, generator=g))
    yield ("W1", "small BN CNN, digits train (1,438)",
           ModelSpec(name="cnn-small", options={"batch_norm": True}), load(DataSpec(name="digits")),
           8 if quick else 21)
    yield ("W2", "VGG BN w=0.5, 2,048 CIFAR-shaped",
           ModelSpec(name="vgg", options={"batch_norm": True, "width": 0.5, "dropout": 0.0}),
           cifar, 2 if quick else 3)
    yield ("W3", "MLP 784-512-256, 10,000 inputs",
           ModelSpec(name="mlp", options={"in_features": 784, "hidden": [512, 256]}), mlp,
           4 if quick else 8)


def loss_landscapes_plane(spec: ModelSpec, anchors, x, y, steps: int) -> None:
    """The peer, as its README calls it: three models, a Loss metric, ``planar_interpolation``."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    models = []
    for sd in anchors:
        m = build(spec, seed=0)
        m.load_state_dict(sd)
        models.append(m.eval())
    loss_landscapes.planar_interpolation(*models, Loss(F.cross_entropy, x, y), steps=steps,
                                         deepcopy_model=True)


def stats_seconds(model, data: EvalData, anchors, attrs: dict) -> float:
    """Seconds per point of the BN statistics passes alone, as the API ran them (its batch
    size, compilation and thread count; a warm-up call absorbs compilation)."""
    ev = Evaluator(model, data, bn="recompute", compile=bool(attrs["compile"]),
                   batch_size=int(attrs["batch_size"]))
    runner = ev._runner("loop")
    if not runner.recompute:
        return 0.0
    runner.prepare(anchors, False, bool(attrs["compile"]))
    c = torch.tensor([[0.4, 0.3, 0.3]])
    with torch.no_grad(), torch_threads(max(1, int(attrs["threads"]))):
        torch.matmul(c, runner.matrix, out=runner.flat.view(1, -1))
        runner._recompute(runner.variant)  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            runner._recompute(runner.variant)
            best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="W1,W2,W3", help="comma-separated workload keys")
    parser.add_argument("--quick", action="store_true", help="smaller grids (a smoke run)")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    print(f"load average at start: {os.getloadavg()}, usable cores: "
          f"{len(os.sched_getaffinity(0))}, torch threads (loss-landscapes): "
          f"{torch.get_num_threads()}", flush=True)
    rows = []
    for key, name, spec, source, steps in workloads(args.quick):
        if key not in wanted:
            continue
        model = build(spec, seed=0)
        anchors = [build(spec, seed=s).state_dict() for s in (1, 2, 3)]
        data, _ = surface.eval_data(source)
        points = steps * steps
        times: dict[str, list[float]] = {"peer": [], "peer 1 thr": [], "recompute": [],
                                         "interpolate": []}
        attrs: dict = {}

        def ours(bn: str) -> None:
            ds = surface.plane(model, anchors, source, steps=steps, bn=bn, progress=False)
            attrs[bn] = ds.attrs

        def peer_one_thread() -> None:
            with torch_threads(1):
                loss_landscapes_plane(spec, anchors, data.x, data.y, steps)

        calls = {"peer": lambda: loss_landscapes_plane(spec, anchors, data.x, data.y, steps),
                 "peer 1 thr": peer_one_thread,
                 "recompute": lambda: ours("recompute"),
                 "interpolate": lambda: ours("interpolate")}
        for r in range(args.rounds):
            for label, call in calls.items():
                times[label].append(_timed(call))
            print(f"  {key} round {r + 1}: " + ", ".join(
                f"{label} {points / t[-1]:.3g} pts/s" for label, t in times.items()), flush=True)
        med = {label: statistics.median(t) for label, t in times.items()}
        a = attrs["recompute"]
        stats = stats_seconds(model, data, anchors, a) * points
        rows.append((key, name, points, points / med["peer"], points / med["recompute"],
                     med["peer"] / med["recompute"], points / med["interpolate"],
                     med["peer"] / med["interpolate"],
                     med["recompute"] / (med["interpolate"] + stats),
                     min(med["peer"], med["peer 1 thr"]) / med["recompute"],
                     f"{a['strategy']}, {a['threads']} thr, batch {a['batch_size']}, "
                     f"compile {a['compile']}"))
    print(f"\nload average at end: {os.getloadavg()}\n")
    header = ("", "workload", "points", "loss-landscapes pts/s", "plane (default) pts/s",
              "ratio", "plane interpolate pts/s", "ratio", "recompute/(interp+stats)",
              "default vs the peer's faster thread count", "lossurf chose")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(f"{r[0]} | {r[1]} | {r[2]} | {r[3]:.3g} | {r[4]:.3g} | {r[5]:.2f}x | {r[6]:.3g} | "
              f"{r[7]:.2f}x | {r[8]:.2f}x | {r[9]:.2f}x | {r[10]}")


if __name__ == "__main__":
    main()
