"""The "Beyond the paper" recipe on a tiny preset: every figure's data, the numbers in
result.json against recomputation from the stores, the report's section, resume, bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from lossurf.errors import LossurfError
from lossurf.experiments import run_recipe
from lossurf.experiments.beyond import comparison_sentence
from lossurf.experiments.result import FigureSpec, RecipeResult
from lossurf.presets import parse_preset
from tests.test_recipes import TINY

KINDS = {"surface", "trajectory_plane", "table", "bars", "density", "curve", "alignment"}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("beyond")
    preset = parse_preset(copy.deepcopy(TINY))
    run_recipe("restarts", preset, out, progress=False)  # the basins the table reads
    run_recipe("beyond", preset, out, progress=False)
    return out


@pytest.fixture(scope="module")
def result(out: Path) -> RecipeResult:
    return RecipeResult.load(out / "beyond")


def _barrier(loss: np.ndarray) -> float:
    """max(L) - max(L(0), L(1)), written out (the reference for analysis.basins.barrier)."""
    return max(0.0, float(loss.max()) - max(float(loss[0]), float(loss[-1])))


def test_every_figure_kind_has_its_data(result: RecipeResult) -> None:
    assert {s.kind for s in result.figures} == KINDS
    for spec in result.figures:
        if "surface" in spec.data:
            ds = xr.open_zarr(result.path(spec.data["surface"]))
            assert np.isfinite(ds["loss"].values).all(), spec.key
            if "computed" in ds:  # curve stores have no such mask
                assert bool(np.asarray(ds["computed"].values).all()), spec.key
        if "table" in spec.data:
            assert len(pd.read_csv(result.path(spec.data["table"]))) == 2  # sgd, adam
        for entry in spec.data.get("series", []):
            assert (result.path(spec.data["folder"]) / f"{entry['hessian']}.zarr").is_dir()
    seconds = result.measurements["wall_time"]["seconds"]
    assert set(seconds) == {"train", "random_planes", "pca_training", "pca_plane", "hessian",
                            "curve", "alignment"}
    assert all(v >= 0 for v in seconds.values())
    load = result.measurements["wall_time"]["load_average"]
    assert len(load["start"]) == len(load["end"]) == 3


def test_alignment_barriers_equal_the_stores_loss_arrays(result: RecipeResult) -> None:
    aligned = result.measurements["alignment"]
    assert set(aligned) == {"sgd@seed0|adam@seed0", "sgd@seed0|sgd@seed1"}
    for entry in aligned.values():
        ds = xr.open_zarr(result.path(entry["store"]))
        loss = np.asarray(ds["loss"].values, np.float64)  # dims (aligned, alpha)
        assert list(ds["aligned"].values) == [0.0, 1.0]
        assert entry["barrier_raw"] == pytest.approx(_barrier(loss[0]))
        assert entry["barrier_aligned"] == pytest.approx(_barrier(loss[1]))
        # both lines start at the same weights, and the aligned end is the same function
        assert loss[0, 0] == pytest.approx(loss[1, 0])
    spec = next(s for s in result.figures if s.key == "align-sgd-seed0-sgd-seed1")
    e = aligned["sgd@seed0|sgd@seed1"]
    assert f"Barrier {e['barrier_raw']:.4g} before, {e['barrier_aligned']:.4g} after" in spec.caption


def test_curve_numbers_equal_the_store(result: RecipeResult) -> None:
    c = result.measurements["curve"]
    ds = xr.open_zarr(result.path(c["store"]))
    along = np.asarray(ds["loss"].values, np.float64)
    line = np.asarray(ds["loss_line"].values, np.float64)
    assert c["barrier_curve"] == pytest.approx(_barrier(along))
    assert c["barrier_line"] == pytest.approx(_barrier(line))
    assert c["max_loss_curve"] == pytest.approx(along.max())
    # the curve and the line share their end points
    assert along[0] == pytest.approx(line[0]) and along[-1] == pytest.approx(line[-1])


def test_hessian_table_matches_the_stores_and_the_answer(result: RecipeResult) -> None:
    from lossurf import hessian

    table = pd.read_csv(result.path(result.tables["hessian"])).set_index("method")
    tops = result.measurements["top_eigenvalue"]
    for method in ("sgd", "adam"):
        ds = hessian.load(result.path(f"hessian/{method}.zarr"))
        values = np.asarray(ds.eigenvalues.values)
        assert np.all(np.diff(values) <= 1e-9)  # descending
        assert table.loc[method, "top eigenvalue"] == pytest.approx(values[0])
        assert tops[method] == pytest.approx(values[0])
        assert table.loc[method, "trace"] == pytest.approx(float(ds.trace))
        assert table.loc[method, "eps-sharpness(0.001) %"] == pytest.approx(
            float(ds.eps_sharpness.values[0]))
        assert isinstance(table.loc[method, "basin width"], str)  # from the restarts' basins
    assert bool(table.loc["adam", "adaptive"]) and not bool(table.loc["sgd", "adaptive"])
    answer = result.measurements["adaptive_sharper"]
    assert answer == comparison_sentence(tops, {"sgd": False, "adam": True}, "sgd")
    assert answer.startswith("Yes" if tops["adam"] > tops["sgd"] else "No")
    spec = next(s for s in result.figures if s.key == "hessian-table")
    assert answer in spec.caption


def test_random_plane_center_is_the_minimum(result: RecipeResult, out: Path) -> None:
    """The plane's (0, 0) loss equals the restarts' basin profile at lambda = 0: two
    surfaces, the same weights and evaluation data."""
    ds = xr.open_zarr(result.path("surfaces/random-sgd.zarr"))
    center = float(ds["loss"].sel(alpha=0.0, beta=0.0).values)
    basin = xr.open_zarr(out / "restarts" / "surfaces" / "basin-sgd-s0.zarr")
    at_min = float(basin["loss"].sel({"lambda": 0.0}, method="nearest").values)
    assert center == pytest.approx(at_min, rel=1e-5)
    assert result.measurements["random_plane/sgd"]["center_loss"] == pytest.approx(center)


def test_trajectory_run_has_every_epoch_and_the_main_runs_weights(result: RecipeResult) -> None:
    from lossurf import load_experiment

    main = load_experiment(result.path(result.experiments["main"]))
    traj = load_experiment(result.path(result.experiments["trajectory"]))
    assert traj.config.checkpoint_every == 1 and main.config.checkpoint_every == 2
    ds = xr.open_zarr(result.path("surfaces/pca-adam.zarr"))
    assert list(ds.attrs["pca_epochs"]) == [0, 1, 2]
    a, b = main.weights("adam@seed0"), traj.weights(traj.runs[0])
    for key in a:  # only how often weights are saved differs
        torch.testing.assert_close(a[key], b[key])
    pca = result.measurements["pca"]
    on_disk = sum(p.stat().st_size for p in traj.path.rglob("*.safetensors"))
    assert pca["checkpoint_bytes"] == on_disk > 0


def test_lowered_reads_the_numbers() -> None:
    from lossurf.experiments.beyond import lowered

    assert lowered(0.0, 0.0, "alignment") == "there is no barrier for alignment to lower."
    assert lowered(1.0, 0.25, "alignment") == "alignment lowers it by 75%."
    assert lowered(1.0, 1.5, "the curve") == "the curve does not lower it."


def test_comparison_sentence_reads_the_numbers() -> None:
    adaptive = {"sgd": False, "adam": True, "rmsprop": True}
    assert comparison_sentence({"sgd": 1.0, "adam": 2.0, "rmsprop": 3.0}, adaptive, "sgd") == (
        "Yes: every adaptive method's minimum has a larger top eigenvalue than sgd's (1): "
        "adam 2, rmsprop 3.")
    assert comparison_sentence({"sgd": 5.0, "adam": 2.0, "rmsprop": 3.0}, adaptive,
                               "sgd").startswith("No: every")
    assert comparison_sentence({"sgd": 2.5, "adam": 2.0, "rmsprop": 3.0}, adaptive,
                               "sgd").startswith("Mixed: 1 of 2")
    assert "cannot be compared" in comparison_sentence({"adam": 2.0}, adaptive, "sgd")


def test_report_renders_the_section(out: Path, result: RecipeResult) -> None:
    from lossurf.report import write_report

    page = write_report(out).read_text()
    start = page.index('id="recipe-beyond"')
    section = page[start:]
    assert "Beyond the paper" in section
    assert "could not be drawn" not in page
    for spec in result.figures:
        assert f'id="beyond-{spec.key}"' in section, spec.key
    assert result.measurements["adaptive_sharper"].replace("'", "&#x27;") in section


def test_density_figure_is_redrawn_when_a_hessian_store_changes(result: RecipeResult) -> None:
    from lossurf.reporting.cache import input_files

    spec = next(s for s in result.figures if s.kind == "density")
    files = input_files(spec, result)
    for method in ("sgd", "adam"):
        store = result.path(f"hessian/{method}.zarr")
        assert any(f.is_relative_to(store) for f in files), method


def test_rerun_reuses_every_store(out: Path, result: RecipeResult) -> None:
    stores = [p for p in (out / "beyond").rglob("zarr.json")]
    before = {p: p.stat().st_mtime_ns for p in stores}
    again = run_recipe("beyond", parse_preset(copy.deepcopy(TINY)), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stores} == before
    for key in ("top_eigenvalue", "alignment", "curve", "pca", "adaptive_sharper"):
        assert again.measurements[key] == result.measurements[key], key


def test_drawers_name_a_wrong_store(result: RecipeResult, tmp_path: Path) -> None:
    from lossurf.plots import draw

    wrong = FigureSpec("x", "x", "x", "alignment", {"surface": "surfaces/random-sgd.zarr"})
    with pytest.raises(LossurfError, match="not an alignment store.*compare_barriers"):
        draw(wrong, result, tmp_path)
    wrong = FigureSpec("y", "y", "y", "density", {"folder": "hessian/",
                                                  "series": [{"label": "x", "hessian": "nope"}]})
    with pytest.raises(LossurfError, match=r"nope\.zarr does not exist; run the 'beyond' recipe"):
        draw(wrong, result, tmp_path)
    wrong = FigureSpec("z", "z", "z", "trajectory_plane",
                       {"surface": "surfaces/random-sgd.zarr", "var": "loss"})
    with pytest.raises(LossurfError, match="no projected trajectory.*pca_plane"):
        draw(wrong, result, tmp_path)


def test_a_diverged_pair_is_named(tmp_path: Path, monkeypatch) -> None:
    from lossurf.experiments.common import Context

    # a run that diverged has status "diverged", not "finished" (the engine's own tests make
    # one diverge; here its status is what matters)
    monkeypatch.setattr(Context, "finished", lambda self, exp, run: not run.startswith("sgd@"))
    with pytest.raises(LossurfError, match=r"run sgd@seed0 .* did not finish.*lower its "
                                           "learning rate"):
        run_recipe("beyond", parse_preset(copy.deepcopy(TINY)), tmp_path, progress=False)
