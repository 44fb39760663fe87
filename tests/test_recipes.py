"""Every recipe end to end on a tiny preset; claims.json against an independent recomputation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from lossurf.errors import LossurfError
from lossurf.experiments import RECIPES, run_all, run_recipe
from lossurf.experiments.result import RecipeResult
from lossurf.presets import load_preset, parse_preset

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "max_train": 200, "max_test": 100},
    "model": {"name": "mlp", "options": {"batch_norm": True, "hidden": [16]}},
    "seeds": [0, 1],
    "epochs": 2,
    "batch_size": 50,
    "eval_subset": 100,
    "checkpoint_every": 2,
    "threads": 1,
    "methods": {
        "sgd": {"optimizer": "sgd", "lr": 0.1},
        "sgd-2lr": {"optimizer": "sgd", "lr": 0.2},
        "adam": {"optimizer": "adam", "lr": 0.001},
        "adadelta": {"optimizer": "adadelta", "lr": 1.0, "lr_grid": [1.0, 0.5]},
        "rk2-heun": {"optimizer": "rk2-heun", "lr": 0.2},
        "rk2-midpoint": {"optimizer": "rk2-midpoint", "lr": 0.2},
        "rk2-ralston": {"optimizer": "rk2-ralston", "lr": 0.2},
        "adam+rk2-heun": {"optimizer": "adam+rk2-heun", "lr": 0.002},
    },
    "surface": {"subset": 64, "bn_examples": 64, "line_steps": 5, "extended_steps": 5,
                "basin_steps": 5, "plane_steps": 3},
    "lr_search": {"epochs": 1},
    "optimizers": {"methods": ["sgd", "adam", "adadelta", "rk2-heun"],
                   "pairs": [["sgd", "adam"]], "bilinear_methods": ["sgd", "adam", "adadelta", "rk2-heun"]},
    "restarts": {"methods": ["sgd", "adam"], "pairs": [["sgd", "adam"]]},
    "switching": {"pairs": [["sgd", "adam"]], "fractions": [0.5]},
    "batchnorm": {"methods": ["sgd", "adam"], "pairs": [["sgd", "adam"]]},
    "init": {"method": "sgd", "inits": [{"scheme": "normal", "mean": -10.0, "std": 0.01}], "epochs": 1},
    "runge_kutta": {"methods": ["sgd", "sgd-2lr", "rk2-midpoint", "rk2-heun", "rk2-ralston",
                                "adam", "adam+rk2-heun"]},
}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("recipes")
    run_all(parse_preset(TINY), out, progress=False)
    return out


def _files(result: RecipeResult, spec) -> list[Path]:
    d = spec.data
    paths = []
    if spec.kind in ("lines",):
        paths = [s["surface"] for s in d["series"]]
    elif spec.kind in ("surface", "trajectory_plane", "curve", "alignment"):
        paths = [d["surface"]]
    elif spec.kind == "pair_grid":
        paths = list(d["surfaces"].values()) + list(d["distances"].values())
    elif spec.kind in ("matrix", "bars", "table"):
        paths = [d["table"]]
    elif spec.kind == "density":  # Hessian stores (no loss surface): their metadata files
        paths = [f"{d['folder']}/{s['hessian']}.zarr/zarr.json" for s in d["series"]]
    elif spec.kind == "curves":
        for s in d["series"]:
            exp = result.path(result.experiments[s["experiment"]])
            paths.append(str(exp / "runs" / s["run"]))
    elif "surface" in d:
        paths = [d["surface"]]
    elif "table" in d:
        paths = [d["table"]]
    return [result.path(p) for p in paths]


def test_every_recipe_writes_its_figures_data(out: Path) -> None:
    for name in RECIPES:
        result = RecipeResult.load(out / name)
        assert result.recipe == name and result.figures and result.wall_time > 0
        for spec in result.figures:
            files = _files(result, spec)
            assert files, spec.key
            for f in files:
                if f.suffix == ".zarr":
                    ds = xr.open_zarr(f)
                    assert np.isfinite(ds["loss"].values).any(), f
                elif spec.kind != "curves":
                    assert f.is_file(), f
        for table in result.tables.values():
            assert len(pd.read_csv(result.path(table))) > 0


def test_curves_name_real_runs(out: Path) -> None:
    from lossurf import load_experiment

    result = RecipeResult.load(out / "runge-kutta")
    exp = load_experiment(result.path(result.experiments["main"]))
    curves = [spec for spec in result.figures if spec.kind == "curves"]
    assert curves
    for spec in curves:
        for s in spec.data["series"]:
            assert len(exp.metrics(s["run"])) == 3  # epochs 0..2


def test_claims_match_an_independent_recomputation(out: Path) -> None:
    from lossurf import load_experiment

    claims = {c["number"]: c for c in json.loads((out / "claims.json").read_text())}
    assert sorted(claims) == list(range(1, 11))
    # Claim 1: barrier on the stored train-loss line between the sgd and adam minima.
    opt = RecipeResult.load(out / "optimizers")
    loss = xr.open_zarr(opt.path("surfaces/line-sgd-adam.zarr"))["loss"].values
    expected = max(0.0, loss.max() - max(loss[0], loss[-1]))
    assert claims[1]["values"]["barriers"]["sgd|adam"] == pytest.approx(expected)
    assert claims[1]["held"] == (expected > 0.01)
    # Claim 3: test-accuracy spread from the runs' metrics files (not the recipe's table).
    exp = load_experiment(opt.path(opt.experiments["main"]))
    acc = {m: np.mean([exp.metrics(f"{m}@seed{s}")["test_accuracy"].iloc[-1] for s in (0, 1)])
           for m in TINY["optimizers"]["methods"]}
    assert claims[3]["values"]["test_spread"] == pytest.approx(max(acc.values()) - min(acc.values()))
    # Claim 10: loss at alpha = 2 minus at alpha = 1 on every init -> minimum line.
    res = RecipeResult.load(out / "restarts")
    for m in ("sgd", "adam"):
        for s in (0, 1):
            ds = xr.open_zarr(res.path(f"surfaces/extended-{m}-s{s}.zarr"))
            i1 = int(np.argmin(np.abs(ds.alpha.values - 1.0)))
            rise = float(ds.loss.values[-1] - ds.loss.values[i1])
            assert claims[10]["values"]["rises"][f"{m}@{s}"] == pytest.approx(rise)
    # Claim 8: mean training accuracy over epochs 1..E, from the metrics CSVs.
    rk = RecipeResult.load(out / "runge-kutta")
    rk_exp = load_experiment(rk.path(rk.experiments["main"]))
    for m, score in claims[8]["values"]["score"].items():
        frame = pd.read_csv(rk_exp.path / "runs" / f"{m}@seed0" / "metrics.csv")
        assert score == pytest.approx(frame["train_accuracy"].iloc[1:].mean())
    for c in claims.values():
        assert c["held"] in (True, False, None) and c["measured"]


def test_rerun_is_resumed_not_retrained(out: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (out / "experiments").rglob("final.safetensors")}
    run_recipe("restarts", parse_preset(TINY), out, progress=False)
    after = {p: p.stat().st_mtime_ns for p in (out / "experiments").rglob("final.safetensors")}
    assert before == after


def test_unknown_recipe_lists_names(tmp_path: Path) -> None:
    with pytest.raises(LossurfError, match="unknown recipe 'nope'.*optimizers.*runge-kutta"):
        run_recipe("nope", "digits", tmp_path)


def test_lr_search_picks_the_best_heldout_loss(tmp_path: Path) -> None:
    raw = {**TINY, "methods": {k: v for k, v in TINY["methods"].items()
                               if k in ("sgd", "adam", "adadelta")},
           "optimizers": {**TINY["optimizers"], "methods": ["sgd", "adam", "adadelta"],
                          "bilinear_methods": ["sgd", "adam", "adadelta", "sgd"]},
           "runge_kutta": {"methods": ["sgd", "adam"]}, "init": {**TINY["init"]}}
    result = run_recipe("runge-kutta", parse_preset(raw), tmp_path, lr_search=True, progress=False)
    table = pd.read_csv(result.path(result.tables["lr_search"]))
    chosen = result.measurements["learning_rates"]
    for method, group in table.groupby("method"):
        assert chosen[method] == group.sort_values("heldout_loss").iloc[0]["lr"]
    assert sorted(table[table.method == "sgd"].lr) == [0.01, 0.05, 0.1, 0.2]
    assert result.measurements["lr_search"] is True


def test_the_claims_functional_distance_is_between_the_trained_networks(tmp_path: Path) -> None:
    """Sec. 4.1: F(x, theta) is the output of each trained network, with its own BN
    statistics (checked against the networks run in eval mode)."""
    import torch

    from lossurf import load_experiment
    from lossurf.config import parse_config
    from lossurf.engine import train_experiment
    from lossurf.experiments.common import Context

    config = parse_config({
        "data": {"name": "digits", "max_train": 128, "max_test": 64},
        "model": {"name": "cnn-small", "options": {"batch_norm": True}},
        "epochs": 1, "batch_size": 32, "eval_subset": 64, "checkpoint_every": 1,
        "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.003}]})
    train_experiment(config, tmp_path / "exp")
    exp = load_experiment(tmp_path / "exp")
    ctx = Context(parse_preset(TINY), tmp_path / "out", "optimizers", progress=False)
    got = ctx.functional_distance(exp, "sgd", "adam")
    data = ctx.eval_data(exp, "test")
    probs = []
    for run in ("sgd", "adam"):
        model = exp.model()
        model.load_state_dict(exp.weights(run))
        with torch.no_grad():
            probs.append(torch.softmax(model.eval()(data.x).double(), dim=1))
    expected = float((probs[0] - probs[1]).pow(2).sum(1).mean().sqrt())
    assert got["fdist"] == pytest.approx(expected, rel=1e-5)
    for key, prob in (("accuracy_a", probs[0]), ("accuracy_b", probs[1])):
        assert got[key] == pytest.approx(float((prob.argmax(1) == data.y).double().mean()))
