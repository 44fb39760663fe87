"""Runs at once through lossurf itself: ``train_experiment(jobs=N)`` against ``jobs=1``.

One experiment of ``--runs`` runs of one architecture (optimizers cycling through sgd, adam,
sgdm, rk2-heun) on CIFAR-10-format files of seeded random images written to a temporary folder
(so every worker loads its data from files, as ``lossurf train`` does), trained from scratch
with each ``--jobs`` value in turn. Prints the wall time of the whole ``train_experiment`` call
(worker start-up included), the examples trained per second, the gain over ``jobs=1``, each
run's mean training seconds per epoch and the longest run's busy time (training, evaluation and
checkpoints, from its metrics.csv: the rest of the wall time is start-up and waiting), and the
largest relative distance of any run's final weights from the ``jobs=1`` run's (0 on CPU at a fixed thread
count; cuDNN's run-to-run noise on a GPU, which ``--repeat`` measures by training ``jobs=1``
twice). For NVIDIA MPS, start its daemon before the script (``nvidia-cuda-mps-control -d``)
and stop it after (``echo quit | nvidia-cuda-mps-control``): every CUDA process started in
between, the driver and its workers, joins it.

    python benchmarks/jobs.py --device cuda --runs 8 --jobs 1,4,8 --train 10000 --epochs 2
    LOSSURF_THREADS=1 python benchmarks/jobs.py --device cpu --runs 4 --jobs 1,2 --train 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout without installing

OPTIMIZERS = [("sgd", 0.05), ("adam", 0.001), ("sgdm", 0.05), ("rk2-heun", 0.1)]


def write_cifar(folder: Path, n_train: int, n_test: int) -> None:
    """CIFAR-10 binary files (1 label byte + 3072 pixel bytes per record) of random images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per = -(-n_train // 5)
    for i, count in enumerate([per] * 4 + [n_train - 4 * per], start=1):
        records = rng.integers(0, 256, size=(count, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (folder / f"data_batch_{i}.bin").write_bytes(records.tobytes())
    records = rng.integers(0, 256, size=(n_test, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    (folder / "test_batch.bin").write_bytes(records.tobytes())


def config(data_dir: Path, args: argparse.Namespace):
    from lossurf.config import parse_config

    runs = []
    for i in range(args.runs):
        name, lr = OPTIMIZERS[i % len(OPTIMIZERS)]
        runs.append({"optimizer": name, "lr": lr, "name": f"{name}-{i}"})
    return parse_config({
        "name": "jobs-bench", "device": args.device,
        "data": {"name": "cifar10", "data_dir": str(data_dir), "augment": {"flip": True, "crop": False}},
        "model": {"name": args.model, "options": {"batch_norm": True}},
        "epochs": args.epochs, "batch_size": 128, "eval_subset": min(args.train, 1000),
        "checkpoint_every": args.epochs, "runs": runs,
    })


def finals(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {p.parent.name: load_file(p) for p in sorted(out.glob("runs/*/final.safetensors"))}


def largest_difference(a: dict, b: dict) -> float:
    """The largest relative distance ``|w_b - w_a| / |w_a|`` of any run's final weights."""
    worst = 0.0
    for run, tensors in a.items():
        keys = [k for k, v in tensors.items() if v.is_floating_point()]
        wa = torch.cat([tensors[k].double().flatten() for k in keys])
        wb = torch.cat([b[run][k].double().flatten() for k in keys])
        worst = max(worst, ((wb - wa).norm() / wa.norm()).item())
    return worst


def busy_seconds(out: Path) -> tuple[float, float]:
    """Per run, from its metrics.csv: mean training seconds per epoch, and the run's whole
    busy time (training + evaluation + checkpoints); returns (mean epoch, longest busy run)."""
    import pandas as pd

    epochs, busy = [], []
    for path in sorted(out.glob("runs/*/metrics.csv")):
        m = pd.read_csv(path)
        epochs.append(m["wall_time"].iloc[-1] / (len(m) - 1))
        extra = sum(m[c].fillna(0).sum() for c in ("eval_time", "checkpoint_time") if c in m)
        busy.append(m["wall_time"].iloc[-1] + extra)
    return sum(epochs) / len(epochs), max(busy)


def timed_training(cfg, root: Path, jobs: int, label: str) -> tuple[float, Path]:
    from lossurf.engine import train_experiment

    out = root / label
    began = time.perf_counter()
    statuses = train_experiment(cfg, out, jobs=jobs)
    seconds = time.perf_counter() - began
    bad = {k: v["status"] for k, v in statuses.items() if v["status"] != "finished"}
    if bad:
        raise SystemExit(f"runs did not finish: {bad}")
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--jobs", default="1,4,8", help="comma-separated job counts; 1 first")
    parser.add_argument("--train", type=int, default=10_000, help="training examples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="nin")
    parser.add_argument("--repeat", action="store_true", help="train jobs=1 twice (the noise floor)")
    parser.add_argument("--baseline", type=float, help="seconds of jobs=1 measured before "
                        "(e.g. without MPS): skip training jobs=1 here and compare with these")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    counts = [int(j) for j in args.jobs.split(",")]
    if counts[0] != 1 and args.baseline is None:
        counts.insert(0, 1)
    work = Path(tempfile.mkdtemp(prefix="lossurf-jobs-"))
    results: dict = {"device": args.device, "runs": args.runs, "train": args.train,
                     "epochs": args.epochs, "model": args.model, "rows": []}
    if args.device.startswith("cuda"):
        results["card"] = torch.cuda.get_device_name()
    try:
        write_cifar(work / "data", args.train, 1000)
        cfg = config(work / "data", args)
        examples = args.runs * args.train * args.epochs
        print(f"{args.runs} runs of {args.model} (BN), {args.train:,} CIFAR-shaped examples, "
              f"{args.epochs} epochs, batch 128, on {results.get('card', args.device)}")
        plan = [(j, f"jobs{j}") for j in counts]
        if args.repeat:
            plan.insert(1, (1, "jobs1-again"))
        reference = None
        base = args.baseline
        for jobs, label in plan:
            seconds, out = timed_training(cfg, work, jobs, label)
            weights = finals(out)
            epoch_s, longest = busy_seconds(out)
            reference = reference or weights
            base = base or seconds
            row = {"label": label, "jobs": jobs, "seconds": seconds, "examples_per_s": examples / seconds,
                   "gain": base / seconds, "max_weight_diff_vs_jobs1": largest_difference(reference, weights),
                   "run_epoch_train_s": epoch_s, "longest_run_busy_s": longest}
            results["rows"].append(row)
            print(f"  {label:<14} {seconds:8.1f} s  {row['examples_per_s']:10,.0f} examples/s  "
                  f"{row['gain']:5.2f}x jobs=1  max |w - w1|/|w1| {row['max_weight_diff_vs_jobs1']:.3g}  "
                  f"epoch {epoch_s:.2f} s/run, longest run busy {longest:.1f} s",
                  flush=True)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
