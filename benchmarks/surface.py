"""Grid points per second of the surface evaluator against the naive loop peers use.

One point = the loss over the whole evaluation set. The naive loop does what peers do: combine
the anchors' state dicts, ``load_state_dict`` into the model, eval mode, batches of 256 in the
default memory format. Both run with BN policy ``interpolate``; the cost of ``recompute`` is
reported beside it, relative to ``interpolate`` and to (eval + the statistics passes alone).
FLOPs come from ``FlopCounterMode`` on one forward; the machine's rate from a large float32
matmul in the same process. Timings alternate naive / evaluator for several rounds and keep the
best of each, because the machine is shared.

    python benchmarks/surface.py [--rounds 3] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lossurf.config import DataSpec, ModelSpec
from lossurf.data import load
from lossurf.models import build
from lossurf.surface.batchnorm import begin_recompute, end_recompute
from lossurf.surface.evaluate import EvalData, Evaluator


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def naive_points(model, anchors, coeffs, x, y) -> None:
    """Peers' loop: combined state dict -> load_state_dict -> eval -> batches of 256."""
    for c in coeffs:
        state = {k: (sum(float(ci) * a[k] for ci, a in zip(c, anchors)) if v.is_floating_point() else v)
                 for k, v in anchors[0].items()}
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            loss = sum(F.cross_entropy(model(x[i: i + 256]), y[i: i + 256], reduction="sum")
                       for i in range(0, len(x), 256))
        float(loss)


def forward_flops(model, x) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x[:256])
    return counter.get_total_flops() * len(x) / min(256, len(x))


def workloads(quick: bool):
    digits = load(DataSpec(name="digits"))
    g = torch.Generator().manual_seed(0)
    cifar_x = torch.randn(2048, 3, 32, 32, generator=g)
    cifar_bn = torch.randn(1024, 3, 32, 32, generator=g)
    mlp_x = torch.randn(10_000, 784, generator=g)
    yield ("cnn-small BN, digits (1,438)", ModelSpec(name="cnn-small", options={"batch_norm": True}),
           EvalData.from_dataset(digits, "train"), 40, True)
    yield ("vgg BN w=0.5, CIFAR-shaped (2,048)",
           ModelSpec(name="vgg", options={"batch_norm": True, "width": 0.5, "dropout": 0.0}),
           EvalData(cifar_x, torch.randint(0, 10, (2048,), generator=g), "classification", cifar_bn),
           2 if quick else 4, True)
    yield ("mlp 784-512-256, 10,000 inputs",
           ModelSpec(name="mlp", options={"in_features": 784, "hidden": [512, 256]}),
           EvalData(mlp_x, torch.randint(0, 10, (10_000,), generator=g), "classification",
                    torch.randn(1024, 784, generator=g)), 10, False)


def stats_pass_time(ev: Evaluator, anchors, coeffs) -> float:
    """Seconds per point of the BN statistics passes alone (on the evaluator's own copy)."""
    runner = ev._runner("loop")
    runner.prepare(anchors, False, False)
    stat = runner._variants[(False, False)].stat_module
    with torch.no_grad():
        torch.matmul(coeffs[:1].float(), runner.matrix, out=runner.flat.view(1, -1))
        begin_recompute(runner.bns)
        t = time.perf_counter()
        for s in runner.bn_slices:
            stat(runner.bn_x[s])
        took = time.perf_counter() - t
        end_recompute(runner.bns)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer points (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rate = matmul_rate()
    print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s ({args.threads} threads)")
    rows = []
    for name, spec, data, points, compile_ in workloads(args.quick):
        model = build(spec, seed=0)
        anchors = [build(spec, seed=s).state_dict() for s in (1, 2, 3)]
        coeffs = torch.distributions.Dirichlet(torch.ones(3)).sample((points,)).double()
        flops = forward_flops(copy.deepcopy(model), data.x)
        ev = Evaluator(model, data, bn="interpolate", compile=compile_)
        warm = _timed(lambda: ev.evaluate(anchors, coeffs[:2]))  # includes compilation
        naive_model = copy.deepcopy(model)
        t_naive = t_ev = float("inf")
        for _ in range(args.rounds):
            t_naive = min(t_naive, _timed(lambda: naive_points(naive_model, anchors, coeffs, data.x, data.y)))
            t_ev = min(t_ev, _timed(lambda: ev.evaluate(anchors, coeffs)))
        rate = max(rate, matmul_rate(reps=2))
        rec = Evaluator(model, data, bn="recompute", compile=compile_)
        rec.evaluate(anchors, coeffs[:2])
        t_rec = min(_timed(lambda: rec.evaluate(anchors, coeffs)) for _ in range(args.rounds))
        t_stats = min(stats_pass_time(rec, anchors, coeffs) for _ in range(args.rounds)) * points
        rows.append((name, points / t_naive, points / t_ev, t_naive / t_ev,
                     flops * points / t_ev / rate, t_rec / t_ev, t_rec / (t_ev + t_stats), warm))
        print(f"  done: {name}", flush=True)
    print(f"\nmatmul rate (best seen): {rate / 1e9:.1f} GFLOP/s\n")
    header = ("workload", "naive pts/s", "evaluator pts/s", "ratio", "FLOP frac",
              "recompute/interp", "recompute/(eval+stats)", "warm-up s")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(f"{r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f}x | {r[4]:.0%} | {r[5]:.2f}x | "
              f"{r[6]:.2f}x | {r[7]:.1f}")
    plane_time()


def plane_time() -> None:
    """A 21x21 barycentric plane (441 points) between three cnn-small digits models, BN recomputed."""
    digits = load(DataSpec(name="digits"))
    spec = ModelSpec(name="cnn-small", options={"batch_norm": True})
    model = build(spec, seed=0)
    anchors = [build(spec, seed=s).state_dict() for s in (1, 2, 3)]
    a, b = torch.meshgrid(torch.linspace(0, 1, 21), torch.linspace(0, 1, 21), indexing="ij")
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    # eq. 6-8: theta = theta0 + alpha (beta d1 + (1 - beta) d2), d_i = theta_i - theta0
    coeffs = torch.stack([1 - a, a * b, a * (1 - b)], dim=1)
    ev = Evaluator(model, EvalData.from_dataset(digits, "train"), bn="recompute")
    took = _timed(lambda: ev.evaluate(anchors, coeffs))
    print(f"\n21x21 barycentric plane, cnn-small on digits (1,438 train examples), BN recomputed "
          f"from 1,024 examples: {took:.1f} s including compilation")


if __name__ == "__main__":
    main()
