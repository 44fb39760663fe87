"""Per-layer memory formats in the CPU loop: channels-last throughout against the timed layouts.

For a VGG-BN at widths 0.5 and 1 on CIFAR-shaped inputs, in one process, rounds interleaved:
the evaluator with ``channels_last=True`` (every layer channels-last) and with the default
(the 2-D convolutions timed faster in NCHW run in NCHW; see ``lossurf.surface.layouts``). It
prints the planning time (threads, and the layout timing for the default) and the seconds per
point of the evaluation after it, medians over rounds, and which layers ran in NCHW. On a
shared machine only the ratios within one run mean anything.

    python benchmarks/layouts.py [--rounds 3] [--points 8] [--examples 512] [--bn interpolate]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lossurf.config import ModelSpec
from lossurf.models import build
from lossurf.surface.evaluate import EvalData, Evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--bn", default="interpolate")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    g = torch.Generator().manual_seed(0)
    data = EvalData(torch.randn(args.examples, 3, 32, 32, generator=g),
                    torch.randint(0, 10, (args.examples,), generator=g), "classification",
                    torch.randn(256, 3, 32, 32, generator=g))
    coefficients = torch.tensor([[0.4, 0.3, 0.3]] * args.points)
    for width in (0.5, 1.0):
        spec = ModelSpec(name="vgg", options={"batch_norm": True, "width": width, "dropout": 0.0})
        model = build(spec, seed=0)
        anchors = [build(spec, seed=s).state_dict() for s in (1, 2, 3)]
        plan: dict[str, list[float]] = {"channels-last": [], "timed": []}
        point: dict[str, list[float]] = {"channels-last": [], "timed": []}
        chosen: list[str] = []
        for _ in range(args.rounds):
            for label, option in (("channels-last", True), ("timed", None)):
                ev = Evaluator(model, data, bn=args.bn, channels_last=option)
                start = time.perf_counter()
                decided = ev.plan(anchors, coefficients.repeat(64, 1))  # as for a big grid
                plan[label].append(time.perf_counter() - start)
                start = time.perf_counter()
                ev.evaluate(anchors, coefficients)
                point[label].append((time.perf_counter() - start) / args.points)
                if option is None:
                    chosen = decided["nchw_layers"]
        med = {k: statistics.median(v) for k, v in point.items()}
        print(f"VGG width {width}, {args.examples} inputs, bn={args.bn}: channels-last "
              f"{med['channels-last']:.3f} s/point (plan {statistics.median(plan['channels-last']):.2f} s), "
              f"timed layouts {med['timed']:.3f} s/point (plan {statistics.median(plan['timed']):.2f} s): "
              f"{med['channels-last'] / med['timed']:.2f}x; NCHW: {', '.join(chosen) or 'none'}",
              flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
