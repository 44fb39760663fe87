"""Synthetic recipe outputs for the plot and report tests: zarr stores, metrics CSVs, tables,
experiment provenance and result.json files, all in the layouts the recipes write."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from lossurf.experiments.result import Claim, FigureSpec, RecipeResult

METHODS = ["sgd", "adam", "rk2-heun"]


def write_store(path: Path, ds: xr.Dataset) -> None:
    """Write a Dataset as a zarr store, as lossurf.surface.store does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(str(path), mode="w", consolidated=True)


def line_store(path: Path, *, scale: float = 1.0, x: str = "alpha", spoil: dict | None = None,
               distances: bool = False) -> np.ndarray:
    """A 1-D store: loss = scale * (1 + 4 a (1 - a)), optionally with spoiled points."""
    xs = np.linspace(-0.5, 1.5, 21) if x == "alpha" else np.linspace(-1.0, 3.0, 21)
    loss = scale * (1 + 4 * xs * (1 - xs)) + 0.1
    for index, value in (spoil or {}).items():
        loss[index] = value
    data = {"loss": ((x,), loss), "accuracy": ((x,), np.clip(1 - loss / 10, 0, 1))}
    if distances:
        data["fdist"] = ((x,), np.sqrt(2) * np.sin(np.pi * np.clip(xs, 0, 1) / 2) * 0.6)
        data["disagreement"] = ((x,), 0.3 * np.clip(xs, 0, 1))
    ds = xr.Dataset(data, coords={x: xs}, attrs={"lossurf_kind": "line" if x == "alpha" else
                                                 "basin", "anchor_labels": ["init", "sgd"]})
    write_store(path, ds)
    return loss


def plane_store(path: Path, *, kind: str = "barycentric", spoil: dict | None = None,
                labels=("init", "sgd", "adam"), uncomputed: tuple | None = None) -> np.ndarray:
    """A 2-D store: a bowl; ``spoil`` maps (i, j) to a value (inf, nan, 1e30)."""
    dims = ("x", "y") if kind == "affine" else ("alpha", "beta")
    a, b = np.linspace(0, 1, 11), np.linspace(0, 1, 9)
    A, B = np.meshgrid(a, b, indexing="ij")
    loss = 2.3 * (1 - A) + 0.5 * (B - 0.5) ** 2 + 0.05
    for (i, j), value in (spoil or {}).items():
        loss[i, j] = value
    computed = np.ones(loss.shape, bool)
    if uncomputed:
        computed[uncomputed] = False
        loss[uncomputed] = np.nan
    attrs = {"lossurf_kind": kind, "anchor_labels": list(labels),
             "anchor_roles": ["p0", "p1", "p2"]}
    if kind == "affine":
        attrs.update(geometry_anchor_x=[0.0, 1.0, 0.4], geometry_anchor_y=[0.0, 0.0, 0.9])
    elif kind == "barycentric":
        attrs.update(geometry_corner_alpha=[0.0, 1.0, 1.0], geometry_corner_beta=[0.0, 1.0, 0.0])
    else:
        attrs.update(geometry_corner_alpha=[1.0, 0.0, 1.0, 0.0],
                     geometry_corner_beta=[1.0, 1.0, 0.0, 0.0])
        attrs["anchor_labels"] = list(labels) + ["other"]
    ds = xr.Dataset(
        {"loss": (dims, loss), "accuracy": (dims, 1 - loss / 5), "computed": (dims, computed)},
        coords={dims[0]: a, dims[1]: b}, attrs=attrs,
    )
    write_store(path, ds)
    return loss


def experiment_dir(root: Path, runs: dict[str, dict], name: str = "main") -> None:
    """An experiment directory (runs.py layout) with metrics, status and provenance."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "experiment.yaml").write_text(f"name: {name}\nepochs: 4\nseeds: [0]\n")
    (root / "manifest.json").write_text(json.dumps({
        "lossurf": "0.1.0", "torch": "2.13.0", "python": "3.11", "command": "lossurf demo",
        "runs": {r: {"seed": 0} for r in runs}}))
    for run, spec in runs.items():
        d = root / "runs" / run
        d.mkdir(parents=True)
        epochs = np.arange(5)
        train_loss = spec.get("scale", 1.0) * np.exp(-epochs / 2) + 0.05
        frame = pd.DataFrame({
            "epoch": epochs, "optimizer": run, "lr": 0.1, "train_loss": train_loss,
            "train_accuracy": 1 - train_loss / 3, "test_loss": train_loss + 0.1,
            "test_accuracy": 1 - train_loss / 2.5, "batch_loss": train_loss,
            "distance_from_init": epochs * 0.7, "gradient_evaluations": epochs * 10 *
            spec.get("evals", 1), "wall_time": epochs * 0.25,
        })
        if spec.get("diverge"):
            frame.loc[3:, ["train_loss", "test_loss"]] = np.nan
            frame.loc[2, "train_loss"] = 1e30
        frame.to_csv(d / "metrics.csv", index=False)
        (d / "status.json").write_text(json.dumps({
            "status": "diverged" if spec.get("diverge") else "finished", "epochs_done": 4,
            "checkpoints": {"final.safetensors": "ab" * 32}}))


def recipe(out: Path, name: str, section: str, figures: list[FigureSpec]) -> RecipeResult:
    """Write a recipe directory with every kind of data and its result.json."""
    root = out / name
    (root / "surfaces").mkdir(parents=True)
    (root / "tables").mkdir()
    experiment_dir(root / "experiments" / "main", {m: {"scale": 1 + i} for i, m in
                                                    enumerate(METHODS)})
    result = RecipeResult(recipe=name, title=f"{name} recipe", section=section, preset="digits",
                          root=root, wall_time=3.5, experiments={"main": "experiments/main"},
                          tables={"distances": "tables/distances.csv"},
                          measurements={"barrier/sgd|adam": 0.8}, figures=figures)
    result.save()
    return result


def claims(out: Path) -> list[Claim]:
    """A claims.json with held, not-held and not-tested claims."""
    rows = [
        Claim(1, "different methods reach different minima", "barrier sgd|adam", "0.80", True,
              "optimizers", {"barrier": 0.8}),
        Claim(5, "Adam's basins are wider than SGD's", "basin width ratio", "0.7", False,
              "restarts"),
        Claim(8, "Heun and Ralston beat SGD at equal epochs", "accuracy gap", "n/a", None,
              "runge-kutta"),
    ]
    Claim.save_all(rows, out / "claims.json")
    return rows
