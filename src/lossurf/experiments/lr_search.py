"""``--lr-search``: each method's learning rate, the best of its grid on held-out training data.

Short runs (``preset.lr_search.epochs``) train on the training split minus a held-out fraction
and are scored by their final loss on that fraction; diverged runs score infinity. The choice
is cached in ``OUT/lr-search/choice.json`` so every recipe of one ``run all`` uses the same.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import torch

from lossurf import data as data_module
from lossurf.config import ExperimentConfig, RunSpec
from lossurf.engine import train_experiment
from lossurf.experiment import load_experiment
from lossurf.presets import PAPER_LR_GRIDS, Preset
from lossurf.runs import read_json, write_json

__all__ = ["grid_for", "searched", "search_learning_rates", "with_doubled"]


def grid_for(preset: Preset, method: str) -> list[float]:
    """The grid searched for ``method``: its own ``lr_grid``, else the paper's (3.4): the SGD
    grid for the SGD family, the adaptive grid otherwise, doubled for Runge-Kutta variants."""
    spec = preset.methods[method]
    if spec.lr_grid:
        return list(spec.lr_grid)
    base, _, rk = spec.optimizer.partition("+")
    if base.startswith("rk2-"):
        base, rk = "sgd", base
    family = "sgd" if base in ("sgd", "sgdm") else "adaptive"
    factor = 2.0 if rk else 1.0
    return [lr * factor for lr in PAPER_LR_GRIDS[family]]


def searched(preset: Preset, methods: list[str]) -> list[str]:
    """The methods whose rate is searched for ``methods``: each one, except that a method
    twice another's (``twice_of``, the paper's doubled rates) brings its base instead."""
    out: list[str] = []
    for m in methods:
        base = preset.methods[m].twice_of or m
        if base not in out:
            out.append(base)
    return out


def with_doubled(preset: Preset, methods: list[str], chosen: dict[str, float]) -> dict[str, float]:
    """The rate of each of ``methods`` from the searched ``chosen`` ones: twice its base's for a
    ``twice_of`` method (sec. 3.4: "We doubled the learning rates ... with Runge-Kutta"; A.4:
    SGD x2 is SGD at twice SGD's rate), else its own choice."""
    return {m: 2.0 * chosen[spec.twice_of] if (spec := preset.methods[m]).twice_of else chosen[m]
            for m in methods}


def search_learning_rates(
    preset: Preset, out: Path, methods: list[str], *, data_dir: Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, float], pd.DataFrame]:
    """The best learning rate of each method and the table of every candidate's score (a
    ``twice_of`` method is not searched: it gets twice its base's choice)."""
    folder = Path(out) / "lr-search"
    cache = folder / "choice.json"
    known = read_json(cache) if cache.is_file() else {}
    spec = preset.data if data_dir is None else preset.data.model_copy(update={"data_dir": data_dir})
    if preset.lr_search.max_train:
        spec = spec.model_copy(update={"max_train": preset.lr_search.max_train})
    full = data_module.load(spec)
    n = len(full.train_x)
    held = max(1, int(n * preset.lr_search.holdout))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1234))
    split = dataclasses.replace(
        full, train_x=full.train_x[order[held:]], train_y=full.train_y[order[held:]],
        test_x=full.train_x[order[:held]], test_y=full.train_y[order[:held]])
    rows = []
    bases = searched(preset, methods)
    todo = [m for m in bases if m not in known.get("lrs", {})]
    if todo:
        runs = []
        for m in todo:
            method = preset.methods[m]
            runs += [RunSpec(optimizer=method.optimizer, lr=lr, options=method.options,
                             name=f"{m}-lr{i}") for i, lr in enumerate(grid_for(preset, m))]
        short = {"epochs": preset.lr_search.epochs, "checkpoint_every": preset.lr_search.epochs}
        config = ExperimentConfig(
            **{**preset.training_settings(), **short}, name=f"lr-search-{preset.name}",
            data=spec, model=preset.model, seeds=[preset.seeds[0]], runs=runs)
        path = folder / "-".join(sorted(todo)).replace("+", "p")[:80]
        train_experiment(config, path, dataset=split, command="lossurf --lr-search")
        exp = load_experiment(path)
        for m in todo:
            for i, lr in enumerate(grid_for(preset, m)):
                run = f"{m}-lr{i}"
                loss = float(exp.metrics(run)["test_loss"].iloc[-1])
                if exp.status(run)["status"] != "finished" or not math.isfinite(loss):
                    loss = math.inf
                rows.append({"method": m, "lr": lr, "heldout_loss": loss})
        frame = pd.DataFrame(rows)
        for m in todo:
            best = frame[frame.method == m].sort_values("heldout_loss").iloc[0]
            known.setdefault("lrs", {})[m] = float(best["lr"])
        known["table"] = known.get("table", []) + rows
        write_json(cache, known)
        if progress:
            print("  lr search: " + ", ".join(f"{m}={known['lrs'][m]:g}" for m in todo), flush=True)
    table = pd.DataFrame([r for r in known.get("table", []) if r["method"] in bases])
    return with_doubled(preset, methods, known["lrs"]), table
