"""Every figure and table of the paper: its recipe declares it and its data exists after a run.

One tiny run of every recipe (module fixture, ~1-2 min on a loaded 2-core machine) with two
switching variants standing for Figs. 7(d) and 12-15; the built-in presets are checked to list
every figure (Table 1's 21 pairs in ``cifar10``) without training anything.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from lossurf.experiments import RECIPES, run_all
from lossurf.experiments.common import Context, switch_name
from lossurf.experiments.optimizers import fig2_corners
from lossurf.experiments.paper import PAPER_FIGURES, VARIANT_FIGURES
from lossurf.experiments.result import RecipeResult
from lossurf.presets import load_preset, parse_preset
from lossurf.surface.plane import bilinear_grid

from tests.test_recipes import TINY, _files

ROOT = Path(__file__).resolve().parents[1]

RAW = copy.deepcopy(TINY)
RAW["switching"]["variants"] = [
    {"key": "fig7d", "pairs": [["adadelta", "adam"]], "lrs": {"adam": 0.0001}},
    {"key": "fig12b", "pairs": [["sgd", "adam"], ["adam", "sgd"]], "lrs": {"sgd": 0.05}},
]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("paper")
    run_all(parse_preset(RAW), out, progress=False)
    return out


def _spec(result: RecipeResult, key: str):
    if key.endswith("*"):
        found = [f for f in result.figures if f.key.startswith(key[:-1])]
    else:
        found = [f for f in result.figures if f.key == key]
    assert found, f"{result.recipe} declares no figure {key!r}"
    return found


def _check_data(result: RecipeResult, spec) -> None:
    files = _files(result, spec)
    assert files, spec.key
    for f in files:
        if f.suffix == ".zarr":
            assert np.isfinite(xr.open_zarr(f)["loss"].values).any(), f
        else:
            assert f.exists(), f


@pytest.mark.parametrize("figure", PAPER_FIGURES, ids=lambda f: f.paper)
def test_every_paper_figure_has_its_data(out: Path, figure) -> None:
    assert figure.recipe in RECIPES
    result = RecipeResult.load(out / figure.recipe)
    for key in figure.keys:
        for spec in _spec(result, key):
            _check_data(result, spec)


def test_variant_panels_have_their_data(out: Path) -> None:
    result = RecipeResult.load(out / "switching")
    for key in ("fig7d", "fig7d-curves", "fig12b", "fig12b-curves"):
        (spec,) = _spec(result, key)
        _check_data(result, spec)
    # fig12b's adam -> sgd runs at 0.05 after the switch (its own name); sgd -> adam keeps
    # adam's own rate, so it is the plain switch, trained once.
    variant = {v["key"]: v for v in result.measurements["variants"]}["fig12b"]
    runs = {(r["a"], r["b"]): r for r in variant["runs"]}
    assert runs[("adam", "sgd")]["run"] == "adam-to-sgd-50-lr0.05@seed0"
    assert runs[("adam", "sgd")]["lr_after"] == 0.05
    assert runs[("sgd", "adam")]["run"] == "sgd-to-adam-50@seed0"
    from lossurf import load_experiment

    exp = load_experiment(result.path(result.experiments["main"]))
    spec = next(s for _, s, _ in exp.config.iter_runs() if s.base_name() == "adam-to-sgd-50-lr0.05")
    assert spec.switch.lr == 0.05 and spec.lr == 0.001


def test_table2_is_surfaces_with_and_without_batch_norm(out: Path) -> None:
    result = RecipeResult.load(out / "batchnorm")
    kinds = {f.key: f.kind for f in result.figures}
    assert kinds["table2-bn-sgd-adam"] == kinds["table2-no-bn-sgd-adam"] == "surface"
    assert kinds["table2-lines"] == "lines"
    bn = xr.open_zarr(result.path(_spec(result, "table2-bn-sgd-adam")[0].data["surface"]))
    no = xr.open_zarr(result.path(_spec(result, "table2-no-bn-sgd-adam")[0].data["surface"]))
    assert bn.attrs["experiment"] != no.attrs["experiment"]  # two different networks
    # Fig. 8 is the network without batch norm only
    for key in ("fig8a", "fig8b"):
        for s in _spec(result, key)[0].data["series"]:
            assert "/no-bn-" in s["surface"] or s["surface"].startswith("surfaces/no-bn-")


def test_fig10_is_not_fig5a(out: Path) -> None:
    result = RecipeResult.load(out / "restarts")
    (a,), (ten,) = _spec(result, "fig5a"), _spec(result, "fig10")
    fives = {s["surface"] for s in a.data["series"]}
    tens = {s["surface"] for s in ten.data["series"]}
    assert fives and tens and not fives & tens
    alpha5 = xr.open_zarr(result.path(next(iter(fives))))["alpha"].values
    alpha10 = xr.open_zarr(result.path(next(iter(tens))))["alpha"].values
    assert (alpha5.min(), alpha5.max()) == (0.0, 1.0)
    assert alpha10.max() == pytest.approx(RAW["surface"].get("extend_to", 2.0))


def test_fig11b_probes_the_plateau(out: Path) -> None:
    from lossurf.experiments.initialization import PROBE_DIRECTIONS, PROBE_RANGE

    result = RecipeResult.load(out / "init")
    (spec,) = _spec(result, "fig11b")
    runs = result.measurements["runs"]
    assert {s["surface"] for s in spec.data["series"]} == {p for r in runs for p in r["probes"]}
    assert all(len(r["probes"]) == PROBE_DIRECTIONS for r in runs)
    alpha = xr.open_zarr(result.path(spec.data["series"][0]["surface"]))["alpha"].values
    # toward and away from a default initialization, the init itself on the grid
    assert alpha.max() == pytest.approx(PROBE_RANGE) and alpha.min() == pytest.approx(-PROBE_RANGE)
    assert 0.0 in alpha


def test_fig2_corners_put_each_training_path_and_the_minima_on_edges(out: Path) -> None:
    corners = fig2_corners("init0", "min0", "init1", "min1")
    grid = bilinear_grid(steps=3)
    at = {c: (a, b) for c, a, b in zip(corners, grid.attrs["corner_alpha"], grid.attrs["corner_beta"])}

    def edge(p: str, q: str) -> bool:  # corners of a square share an edge iff one coordinate
        return sum(x == y for x, y in zip(at[p], at[q])) == 1

    assert edge("init0", "min0") and edge("init1", "min1") and edge("min0", "min1")
    assert edge("init0", "init1")
    assert not edge("init0", "min1") and not edge("init1", "min0")
    # the stored surface has those corners, in that order
    result = RecipeResult.load(out / "optimizers")
    (spec,) = _spec(result, "fig2")
    ds = xr.open_zarr(result.path(spec.data["surface"]))
    labels = list(ds.attrs["endpoints"])
    assert labels == spec.data["corner_labels"]
    assert labels[0].startswith("init") and labels[2].startswith("init")
    assert not labels[1].startswith("init") and not labels[3].startswith("init")
    # eqs. 3-5 by hand at the (alpha, beta) = (0, 1) and (0, 0) corners: the two minima
    coef = grid.coefficients
    assert np.allclose(coef[0, -1], [0, 1, 0, 0]) and np.allclose(coef[0, 0], [0, 0, 0, 1])


def test_table3_is_the_tableaus_trained_with(out: Path) -> None:
    import pandas as pd

    result = RecipeResult.load(out / "runge-kutta")
    table = pd.read_csv(result.path(result.tables["table3"]))
    got = {(r.method, r.coefficient): r.value for r in table.itertuples()}
    paper = {"midpoint": (0, 1, 0.5), "heun": (0.5, 0.5, 1), "ralston": (1 / 3, 2 / 3, 0.75)}
    for method, values in paper.items():
        for c, v in zip(("a1", "a2", "q1"), values):
            assert got[(method, c)] == pytest.approx(v)


# ---- built-in presets: parse, list every figure, no training ---------------------------------

def _variant_keys(name: str) -> set[str]:
    return {v.key for v in load_preset(name).switching.variants}


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar10-vgg", "ptb"])
def test_presets_parse_and_share_runs(name: str, tmp_path: Path) -> None:
    preset = load_preset(name)
    ctx = Context(preset=preset, out=tmp_path, recipe="switching", progress=False)
    names = [r.base_name() for r in ctx.config("main").runs]
    assert len(names) == len(set(names))  # a variant equal to a plain switch is trained once


def test_cifar10_table1_has_all_21_pairs() -> None:
    preset = load_preset("cifar10")
    methods = preset.optimizers.methods
    assert len(methods) == 7
    pairs = {frozenset(p) for p in preset.optimizers.pairs}
    assert pairs == {frozenset(p) for p in itertools.combinations(methods, 2)}
    assert len(preset.optimizers.pairs) == 21


def test_every_variant_panel_has_a_preset() -> None:
    drawn = {"digits": _variant_keys("digits"), "cifar10": _variant_keys("cifar10"),
             "cifar10-vgg": _variant_keys("cifar10-vgg")}
    assert "fig7d" in drawn["digits"] and "fig7d" in drawn["cifar10"]
    for figure in VARIANT_FIGURES:
        for preset in (p.strip() for p in figure.presets.split(",")):
            assert figure.keys[0] in drawn[preset], (figure.paper, preset)
    assert load_preset("cifar10-vgg").model.name == "vgg"
    assert load_preset("cifar10").model.name == "nin"


def test_fig13_learning_rates_follow_the_paper() -> None:
    preset = load_preset("cifar10-vgg")
    v = {x.key: x for x in preset.switching.variants}
    assert preset.methods["sgd"].lr == 0.05 and preset.methods["adam"].lr == 0.001
    assert (v["fig13b"].lrs, v["fig13c"].lrs) == ({"sgd": 0.05, "adam": 0.0005},
                                                  {"sgd": 0.01, "adam": 0.0001})
    assert v["fig13a"].fractions == [0.25, 0.5]  # epochs 50 and 100 of 200
    assert switch_name("adam", "sgd", 0.25, 0.01) == "adam-to-sgd-25-lr0.01"


def test_cifar_presets_state_cifar_torch_augmentation() -> None:
    for name in ("cifar10", "cifar10-vgg"):
        aug = load_preset(name).data.augment
        assert (aug.flip, aug.crop) == (True, False)


def test_docs_table_lists_every_figure() -> None:
    text = (ROOT / "docs" / "paper-figures.md").read_text()
    for figure in PAPER_FIGURES + VARIANT_FIGURES:
        assert f"| {figure.paper} |" in text, figure.paper
        for key in figure.keys:
            assert f"`{key}`" in text, key


@pytest.mark.parametrize("edit,message", [
    (lambda v: v.update(pairs=[["sgd", "lion"]]), r"variants.x.pairs names method 'lion'"),
    (lambda v: v.update(lrs={"sgd": -1.0}), r"variants.x.lrs.sgd: -1.0 must be > 0"),
    (lambda v: v.update(fractions=[1.0]), r"variants.x.fractions: 1.0 is not strictly between"),
    (lambda v: v.update(key="Fig 7"), r"switching.variants.0.key: String should match"),
])
def test_bad_variants_are_named(edit, message) -> None:
    from lossurf.errors import LossurfError

    raw = copy.deepcopy(TINY)
    variant = {"key": "x", "pairs": [["sgd", "adam"]], "lrs": {"adam": 0.0005}}
    edit(variant)
    raw["switching"]["variants"] = [variant]
    with pytest.raises(LossurfError, match=message):
        parse_preset(raw, "mine.yaml")


def test_repeated_variant_keys_are_named() -> None:
    from lossurf.errors import LossurfError

    raw = copy.deepcopy(TINY)
    raw["switching"]["variants"] = [{"key": "x", "pairs": [["sgd", "adam"]]}] * 2
    with pytest.raises(LossurfError, match="keys .* repeat"):
        parse_preset(raw, "mine.yaml")
