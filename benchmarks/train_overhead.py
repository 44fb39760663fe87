"""lossurf's training epoch against a bare PyTorch loop doing the same work, on one device.

Prints, in one process (each figure the median of interleaved repetitions, so load changes hit
every variant alike; only ratios are results):
  1. one epoch of ``lossurf.train.train_epoch`` (device-resident data, the epoch's flips drawn
     at once on the host and applied on the device, losses read once per epoch) against a
     bare loop over the same model, optimizer, batch size, minibatch order and flips, its
     data already on the device and its losses read once per epoch too;
  2. the time of an RK2 (Heun) step against a base SGD step;
  3. with ``--full``, a whole engine epoch (evaluation, checkpoint and resume state included).

Targets (issue 10): a training epoch at most 1.15x the bare loop on a GPU (NIN, batch 128,
CIFAR-shaped data, flips); RK2 step <= 2.1x a base step.

    .venv/bin/python benchmarks/train_overhead.py                  # CPU: cnn-small, 2048 images
    python benchmarks/train_overhead.py --device cuda              # GPU: nin, 50000 images
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from lossurf import models, optim
from lossurf.config import ModelSpec
from lossurf.data.base import Dataset
from lossurf.data.cifar10 import CropFlip
from lossurf.data.placement import place
from lossurf.precision import precision_context
from lossurf.train import batch_sizes, derive_seed, epoch_order, train_epoch


def cifar_shaped(n: int, augment: str, seed: int = 0, n_test: int = 1024) -> Dataset:
    """``n`` random standardized 3x32x32 images with 10 classes (CIFAR-10's shapes); the test
    set is the first ``n_test`` of them."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    aug = {"none": None, "flip": CropFlip(crop=False), "crop-flip": CropFlip()}[augment]
    return Dataset("cifar-shaped", "classification", x, y, x[:n_test], y[:n_test], 10, augment=aug)


def bare_epoch(model, optimizer, x, y, order, flips, batch_size, crop) -> float:
    """The loop a user would write: data, order and flips already on the device, the loss
    summed there and read once at the end."""
    model.train()
    total = torch.zeros((), device=x.device)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        xb = x[index]
        if flips is not None:
            if crop is not None:
                xb = crop.apply(xb, flips[start : start + batch_size])
            else:
                mirror = flips[start : start + batch_size, None, None, None]
                xb = torch.where(mirror, xb.flip(-1), xb)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), y[index])
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return float(total)


def fresh(model_name: str, dataset: Dataset, name: str, lr: float, device: torch.device):
    spec = ModelSpec(name=model_name, options=models.resolve_options(model_name, dataset.model_options()))
    model = models.build(spec, seed=0).to(device)
    return model, optim.build(name, list(model.parameters()), lr=lr)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def full_engine_epoch(model_name: str, batch_size: int, epochs: int, device: str) -> float:
    """Median wall time of one epoch of ``lossurf.engine`` (digits) with everything it does."""
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
        "batch_size": batch_size, "eval_subset": 512, "checkpoint_every": 1, "device": device,
        "threads": torch.get_num_threads(), "runs": [{"optimizer": "sgd", "lr": 0.1}],
    })
    with tempfile.TemporaryDirectory() as out:
        train_experiment(config, out, report=report)
    return statistics.median(times)


def compare_epochs(model_name: str, dataset: Dataset, device: torch.device, *,
                   optimizer: str = "sgdm", precision: str = "tf32", batch_size: int = 128,
                   repeats: int = 5, rk: bool = True) -> dict[str, list[float]]:
    """Seconds of interleaved epochs (after one warm-up of each): ``bare`` (:func:`bare_epoch`,
    the same order and augmentation numbers) and ``lossurf`` (``train_epoch``) with
    ``optimizer``; with ``rk``, also ``sgd`` and ``rk2-heun`` epochs, for the step ratio."""
    n = len(dataset.train_x)
    placed = place(dataset, device)  # once per process, as the engine does
    x, y = placed.train_x.to(device), placed.train_y.to(device)
    crop = dataset.augment if isinstance(dataset.augment, CropFlip) and dataset.augment.crop else None

    def lossurf_run(name: str, lr: float, epoch: int) -> Callable[[], object]:
        model, opt = fresh(model_name, dataset, name, lr, device)
        order = epoch_order(0, epoch, n)
        return lambda: train_epoch(model, opt, dataset, order, batch_size, device=device,
                                   augment_seed=derive_seed("augment", 0, epoch), placed=placed,
                                   precision=precision)

    def bare_run(epoch: int) -> Callable[[], object]:
        model, opt = fresh(model_name, dataset, optimizer, 0.01, device)
        order = epoch_order(0, epoch, n).to(device)
        flips = None
        if dataset.augment is not None:  # the same numbers, drawn the same way, on the device
            params = dataset.augment.draw(batch_sizes(n, batch_size),
                                          torch.Generator().manual_seed(derive_seed("augment", 0, epoch)))
            flips = params.to(device) if crop is not None else params[:, 2].bool().to(device)

        def run() -> float:
            with precision_context("tf32" if precision == "tf32" else "fp32", device):
                if precision == "bf16":
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        return bare_epoch(model, opt, x, y, order, flips, batch_size, crop)
                return bare_epoch(model, opt, x, y, order, flips, batch_size, crop)
        return run

    # Warm-up (cuDNN autotuning, allocator, placement) of both, then interleaved repetitions.
    timed(bare_run(1), device)
    timed(lossurf_run(optimizer, 0.01, 1), device)
    out: dict[str, list[float]] = {"bare": [], "lossurf": [], "sgd": [], "rk2-heun": []}
    for r in range(repeats):
        out["bare"].append(timed(bare_run(r + 1), device))
        out["lossurf"].append(timed(lossurf_run(optimizer, 0.01, r + 1), device))
        if rk:
            out["sgd"].append(timed(lossurf_run("sgd", 0.01, r + 1), device))
            out["rk2-heun"].append(timed(lossurf_run("rk2-heun", 0.02, r + 1), device))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="default: nin on a GPU, cnn-small on the CPU")
    parser.add_argument("--examples", type=int, default=None, help="default: 50000 on a GPU, 2048 on the CPU")
    parser.add_argument("--augment", choices=["none", "flip", "crop-flip"], default="flip")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--optimizer", default="sgdm")
    parser.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="also time a whole engine epoch (digits)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    model_name = args.model or ("nin" if gpu else "cnn-small")
    dataset = cifar_shaped(args.examples or (50_000 if gpu else 2048), args.augment)
    n = len(dataset.train_x)
    steps = -(-n // args.batch_size)
    times = compare_epochs(model_name, dataset, device, optimizer=args.optimizer,
                           precision=args.precision, batch_size=args.batch_size,
                           repeats=args.repeats)
    bare, engine = times["bare"], times["lossurf"]
    base_step = [t / steps for t in times["sgd"]]
    rk_step = [t / steps for t in times["rk2-heun"]]
    med = statistics.median
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {args.threads} thread(s)"
    print(f"{name}: {model_name}, {n} CIFAR-shaped images, batch {args.batch_size}, "
          f"{args.optimizer}, augment {args.augment}, precision {args.precision}, "
          f"median of {args.repeats}")
    print(f"{'':28}{'s/epoch':>10}{'steps/s':>10}")
    print(f"{'bare PyTorch loop':28}{med(bare):10.3f}{steps / med(bare):10.1f}")
    print(f"{'lossurf train_epoch':28}{med(engine):10.3f}{steps / med(engine):10.1f}")
    print(f"lossurf / bare: {med(engine) / med(bare):.3f}x   (target <= 1.15x on a GPU)")
    print(f"RK2 (heun) step / SGD step: {med(rk_step) / med(base_step):.2f}x   "
          "(target <= 2.1x; two gradient evaluations are the floor)")
    if args.full:
        full = full_engine_epoch("cnn-small", 64, args.repeats, args.device)
        print(f"full engine epoch on digits (evaluation, checkpoint, resume state): {full:.3f} s")


if __name__ == "__main__":
    main()
