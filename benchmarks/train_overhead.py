"""Training-engine overhead and Runge-Kutta step cost, measured in one process.

Prints:
  1. steps/s of lossurf's training loop (``lossurf.train.train_epoch``: closure, order, metrics
     hooks) against a bare PyTorch loop on the same model, data and minibatches;
  2. the time of an RK2 (Heun) step against a base SGD step.

Targets (issue 2): engine overhead <= 5 %; RK2 step <= 2.1x a base step.
Timings on a shared machine are noisy: each figure is the median of several interleaved
repetitions, and only ratios are reported as results.

    .venv/bin/python benchmarks/train_overhead.py [--model cnn-small] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lossurf import data as data_module, models, optim
from lossurf.config import DataSpec, ModelSpec
from lossurf.train import epoch_order, train_epoch


def bare_epoch(model, optimizer, x, y, order, batch_size):
    model.train()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        loss.item()  # a real loop reads the loss too (logging, divergence)


def fresh(model_name, dataset, name, lr):
    spec = ModelSpec(name=model_name, options=models.resolve_options(model_name, dataset.model_options()))
    model = models.build(spec, seed=0)
    return model, optim.build(name, list(model.parameters()), lr=lr)


def full_engine_epoch(model_name: str, batch_size: int, epochs: int) -> float:
    """Median wall time of one epoch of ``lossurf.engine`` with everything it does per epoch."""
    import tempfile

    from lossurf.config import parse_config
    from lossurf.engine import train_experiment

    times: list[float] = []
    last = [time.perf_counter()]

    def report(run, epoch, total, row):
        now = time.perf_counter()
        if epoch > 0:
            times.append(now - last[0])
        last[0] = now

    config = parse_config({
        "data": {"name": "digits"}, "model": {"name": model_name}, "epochs": epochs,
        "batch_size": batch_size, "eval_subset": 512, "checkpoint_every": 1,
        "threads": torch.get_num_threads(), "runs": [{"optimizer": "sgd", "lr": 0.1}],
    })
    with tempfile.TemporaryDirectory() as out:
        train_experiment(config, out, report=report)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cnn-small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = data_module.load(DataSpec(name="digits"))
    x, y = dataset.train_x, dataset.train_y
    order = epoch_order(0, 1, len(x))
    steps = -(-len(order) // args.batch_size)
    device = torch.device("cpu")

    def time_it(fn) -> float:
        began = time.perf_counter()
        fn()
        return time.perf_counter() - began

    bare, engine, base_step, rk_step = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
        model, opt = fresh(args.model, dataset, "sgd", 0.1)
        bare.append(time_it(lambda: bare_epoch(model, opt, x, y, order, args.batch_size)))
        model, opt = fresh(args.model, dataset, "sgd", 0.1)
        engine.append(time_it(lambda: train_epoch(model, opt, dataset, order, args.batch_size,
                                                  augment_seed=0, device=device)))
        model, opt = fresh(args.model, dataset, "sgd", 0.1)
        base_step.append(time_it(lambda: train_epoch(model, opt, dataset, order, args.batch_size,
                                                     augment_seed=0, device=device)) / steps)
        model, opt = fresh(args.model, dataset, "rk2-heun", 0.2)
        rk_step.append(time_it(lambda: train_epoch(model, opt, dataset, order, args.batch_size,
                                                   augment_seed=0, device=device)) / steps)
    med = statistics.median
    print(f"model {args.model}, digits ({len(x)} examples), batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'':28}{'steps/s':>12}")
    print(f"{'bare PyTorch loop':28}{steps / med(bare):12.1f}")
    print(f"{'lossurf train_epoch':28}{steps / med(engine):12.1f}")
    overhead = med(engine) / med(bare) - 1
    print(f"engine overhead: {overhead * 100:+.1f} %   (target <= 5 %)")
    ratio = med(rk_step) / med(base_step)
    full = full_engine_epoch(args.model, args.batch_size, args.repeats)
    print(f"full engine epoch (with per-epoch metrics, checkpoint, resume state): "
          f"{full / med(bare):.2f}x a bare epoch (the extra is evaluation and I/O, not steps)")
    print(f"RK2 (heun) step / SGD step: {ratio:.2f}x   (target <= 2.1x; two gradient evaluations are the floor)")


if __name__ == "__main__":
    main()
