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

A second table bounds what any implementation could reach on this machine: the matrix and
convolution FLOPs a point needs (counted by ``torch.utils.flop_counter``: the evaluation set's
forward, without the first layer where lossurf computes it once per anchor, plus the
statistics pass up to the last BN layer under ``recompute``), the best rate this machine reaches
on the model's own layers at the thread count lossurf chose (each layer timed alone, and a
2,048-cube matrix product), each method's share of that rate, and the **ceiling**: the ratio to
loss-landscapes if every one of those FLOPs ran at the best rate.

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
from lossurf.surface.fastpath import trace
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


def _conv_linear_inputs(model, x: torch.Tensor) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """Each conv and linear layer of ``model`` with its input on ``x`` (eval mode)."""
    seen: list[tuple[torch.nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((m, a[0].detach().clone())))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def best_rate(model, x: torch.Tensor, threads: int) -> float:
    """The best FLOP/s this machine reaches at ``threads`` threads on ``model``'s own conv and
    linear layers (each timed alone on 128 examples, channels-last for convolutions, as the
    evaluator runs them) and on a 2,048-cube matrix product."""
    from torch.utils.flop_counter import FlopCounterMode

    def rate(fn) -> float:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        fn()
        return counter.get_total_flops() / min(_timed(fn) for _ in range(3))

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    with torch.no_grad(), torch_threads(threads):
        rates = [rate(lambda: a @ b)]
        for layer, inp in _conv_linear_inputs(model, x[:128]):
            if inp.dim() == 4:
                layer = copy.deepcopy(layer).to(memory_format=torch.channels_last)
                inp = inp.contiguous(memory_format=torch.channels_last)
            rates.append(rate(lambda: layer(inp)))
    return max(rates)


def counted_flops(fn, x: torch.Tensor, n: int) -> float:
    """Matrix and convolution FLOPs of ``fn`` over ``n`` examples, counted by
    ``torch.utils.flop_counter`` on the sample ``x`` and scaled."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(x)
    return counter.get_total_flops() * n / len(x)


def point_flops(model, data: EvalData, bn: str) -> tuple[float, float]:
    """``(evaluation, statistics)`` matrix and convolution FLOPs of one point as lossurf runs
    it: the evaluation set's forward without the first layer where the evaluator shares it (it
    computes that layer once per anchor), and the statistics pass up to the last BN layer."""
    from lossurf.surface.statspass import stats_graph

    runner = Evaluator(model, data, bn=bn, compile=False)._runner("loop")
    work = runner.work
    evaluation = counted_flops(work, data.x[:128], len(data.x))
    statistics_ = 0.0
    if runner.recompute:
        graph = stats_graph(trace(work), runner.bns, runner.bn_batch)
        statistics_ = counted_flops(graph if graph is not None else work, data.bn_x[:128],
                                    len(data.bn_x))
    if runner.should_share(3):  # as many anchors as a plane has
        layer = work.get_submodule(runner.first.layer)

        def first(x: torch.Tensor) -> torch.Tensor:
            return layer(runner.first.pre(x))

        evaluation -= counted_flops(first, data.x[:128], len(data.x))
        if runner.recompute:
            statistics_ -= counted_flops(first, data.bn_x[:128], len(data.bn_x))
    return evaluation, statistics_


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
    rows, ceilings = [], []
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
        rate = best_rate(model, data.x, int(a["threads"]))
        f_eval, f_stats = point_flops(model, data, "recompute")
        need = {"peer": f_eval, "recompute": f_eval + f_stats, "interpolate": f_eval}
        share = {label: need[label] * points / med[label] / rate for label in need}
        ceilings.append((key, (f_eval + f_stats) / 1e9, f_stats / 1e9, rate / 1e9,
                         share["peer"], share["recompute"], share["interpolate"],
                         med["peer"] * rate / (points * (f_eval + f_stats)),
                         med["peer"] * rate / (points * f_eval)))
        rows.append((key, name, points, points / med["peer"], points / med["recompute"],
                     med["peer"] / med["recompute"], points / med["interpolate"],
                     med["peer"] / med["interpolate"],
                     med["recompute"] / (med["interpolate"] + stats),
                     min(med["peer"], med["peer 1 thr"]) / med["recompute"],
                     f"{a['strategy']}, {a['threads']} thr, batch {a['batch_size']}, "
                     f"compile {a['compile']}, {len(a.get('nchw_layers', []))} convs in NCHW"))
    print(f"\nload average at end: {os.getloadavg()}\n")
    header = ("", "workload", "points", "loss-landscapes pts/s", "plane (default) pts/s",
              "ratio", "plane interpolate pts/s", "ratio", "recompute/(interp+stats)",
              "default vs the peer's faster thread count", "lossurf chose")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(f"{r[0]} | {r[1]} | {r[2]} | {r[3]:.3g} | {r[4]:.3g} | {r[5]:.2f}x | {r[6]:.3g} | "
              f"{r[7]:.2f}x | {r[8]:.2f}x | {r[9]:.2f}x | {r[10]}")
    header = ("", "GFLOP per point (default)", "of it statistics", "best rate GFLOP/s",
              "loss-landscapes % of it", "default %", "interpolate %",
              "ceiling of default vs peer", "ceiling of interpolate vs peer")
    print("\n" + " | ".join(header))
    print(" | ".join("---" for _ in header))
    for c in ceilings:
        print(f"{c[0]} | {c[1]:.3g} | {c[2]:.3g} | {c[3]:.0f} | {100 * c[4]:.0f} % | "
              f"{100 * c[5]:.0f} % | {100 * c[6]:.0f} % | {c[7]:.2f}x | {c[8]:.2f}x")


if __name__ == "__main__":
    main()
