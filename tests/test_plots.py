"""Figures: every kind draws from small synthetic stores and CSVs; clipping is counted against
the data; colours are fixed per method; nothing leaks global matplotlib state."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _plot_data import METHODS, experiment_dir, line_store, plane_store

from lossurf.errors import LossurfError
from lossurf.experiments.result import FigureSpec, RecipeResult
from lossurf.plots import OPTIMIZER_COLORS, clip_values, color_for, draw
from lossurf.plots.clip import robust_bound


@pytest.fixture()
def result(tmp_path):
    root = tmp_path / "optimizers"
    (root / "s").mkdir(parents=True)
    (root / "tables").mkdir()
    experiment_dir(root / "exp", {"sgd": {}, "adam": {"scale": 2, "evals": 2},
                                  "rk2-heun": {"diverge": True}})
    return RecipeResult(recipe="optimizers", title="t", section="4.1", preset="digits",
                        root=root, experiments={"main": "exp"})


def _files_ok(drawn):
    assert drawn.png.stat().st_size > 5000 and drawn.pdf.stat().st_size > 2000
    assert drawn.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn.pdf.read_bytes()[:5] == b"%PDF-"


def test_lines_clip_counts_match_the_data(result, tmp_path):
    line_store(result.root / "s/a.zarr")
    spoiled = line_store(result.root / "s/b.zarr", scale=2,
                         spoil={3: np.inf, 7: np.nan, 12: 1e30, 15: -np.inf})
    spec = FigureSpec("fig5", "Loss along lines", "c", "lines", {
        "series": [{"label": "sgd", "surface": "s/a.zarr", "group": "init 1"},
                   {"label": "adam", "surface": "s/b.zarr", "group": "init 1"},
                   {"label": "sgd", "surface": "s/a.zarr", "group": "init 2"}],
        "x": "alpha", "var": "loss", "panels_by": "group"})
    drawn = draw(spec, result, tmp_path / "fig")
    _files_ok(drawn)
    assert drawn.png.name == "optimizers-fig5.png"
    # the three non-finite points and 1e30 are clipped; the smooth parabola is not
    expected = int((~np.isfinite(spoiled)).sum() + (spoiled[np.isfinite(spoiled)] > 100).sum())
    assert expected == 4
    assert drawn.clipped == {"init 1/sgd": 0, "init 1/adam": 4, "init 2/sgd": 0}
    assert drawn.clipped_total == 4 and "clipped" in drawn.notes[0]


def test_lines_over_lambda_in_one_panel(result, tmp_path):
    line_store(result.root / "s/c.zarr", x="lambda")
    spec = FigureSpec("fig6", "Basins", "c", "lines", {
        "series": [{"label": "sgd", "surface": "s/c.zarr"}], "x": "lambda", "var": "loss",
        "panels_by": None})
    drawn = draw(spec, result, tmp_path)
    _files_ok(drawn)
    assert drawn.clipped_total == 0


def test_clip_values_against_hand_counts():
    values = np.array([1.0, 2.0, 3.0, np.inf, np.nan, 1e30, -np.inf, 2.5])
    c = clip_values(values)
    assert c.count == 4
    assert np.array_equal(c.clipped, [False, False, False, True, True, True, True, False])
    # drawn 5 % of the kept range (1 .. 3) above the largest kept value
    assert c.ceiling == pytest.approx(3.1)
    assert c.values[3] == c.values[4] == c.values[5] == c.ceiling and c.values[6] == 1.0
    assert np.isfinite(c.values).all()
    # a smooth steep surface (0.01 .. 100) keeps every value
    steep = np.geomspace(0.01, 100, 200)
    assert clip_values(steep).count == 0
    # the robust bound: q75 + 50 * IQR of the finite values
    finite = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 1e9])
    q25, q75 = np.percentile(finite, [25, 75])
    assert robust_bound(finite) == pytest.approx(q75 + 50 * (q75 - q25))
    assert clip_values(finite).count == 1 and clip_values(finite).ceiling == pytest.approx(5.2)
    # missing points are neither clipped nor drawn
    m = clip_values(np.array([1.0, np.nan, 2.0]), missing=np.array([False, True, False]))
    assert m.count == 0 and np.isnan(m.values[1])
    assert clip_values(np.array([np.nan, np.inf])).count == 2


@pytest.mark.parametrize("kind", ["barycentric", "bilinear", "affine"])
def test_surface_draws_with_divergent_cells(result, tmp_path, kind):
    spoil = {(2, 3): np.inf, (4, 4): np.nan, (9, 1): 1e30}
    plane_store(result.root / "s/p.zarr", kind=kind, spoil=spoil, uncomputed=(0, 8))
    spec = FigureSpec("fig2", "A plane", "c", "surface", {"surface": "s/p.zarr", "var": "loss"})
    drawn = draw(spec, result, tmp_path)
    _files_ok(drawn)
    assert drawn.clipped == {"fig2": 3}  # the uncomputed point is missing, not clipped
    html = drawn.html_fragment
    assert html.startswith("<div") and "Plotly.newPlot" in html and "<script src" not in html
    assert "NaN" not in html and "Infinity" not in html and "1e+30" not in html
    assert "sgd" in html  # anchor labels reach the interactive plot


def test_pair_grid_overview_parts_and_dropdown(result, tmp_path):
    surfaces, distances = {}, {}
    for i, a in enumerate(METHODS):
        for b in METHODS[i + 1:]:
            spoil = {(10, 0): np.inf} if (a, b) == ("sgd", "adam") else None
            plane_store(result.root / f"s/{a}-{b}.zarr", spoil=spoil, labels=("init", a, b))
            line_store(result.root / f"s/d-{a}-{b}.zarr", distances=True)
            surfaces[f"{a}|{b}"] = f"s/{a}-{b}.zarr"
            distances[f"{a}|{b}"] = f"s/d-{a}-{b}.zarr"
    del distances["adam|rk2-heun"]  # a missing cell says so rather than failing
    spec = FigureSpec("table1", "Table 1", "c", "pair_grid",
                      {"methods": METHODS, "surfaces": surfaces, "distances": distances,
                       "detail_pairs": ["adam|sgd"]})
    drawn = draw(spec, result, tmp_path)
    _files_ok(drawn)
    assert len(drawn.parts) == 1  # detail_pairs picks the per-pair figures, either order
    assert drawn.parts[0].png.name == "optimizers-table1-sgd-adam.png"
    assert drawn.parts[0].pdf.is_file()
    assert drawn.clipped["sgd vs adam"] == 1 and drawn.clipped_total == 1
    assert drawn.html_fragment.count('"type":"surface"') == 3
    assert "updatemenus" in drawn.html_fragment


def test_default_detail_pairs():
    from lossurf.plots.surfaces import _detailed

    few, many = ["a", "b", "c"], ["sgd", "b", "c", "d", "e"]
    assert all(_detailed({}, few, x, y) for x in few for y in few if x != y)
    chosen = [(x, y) for i, x in enumerate(many) for y in many[i + 1:] if _detailed({}, many, x, y)]
    assert chosen == [("sgd", m) for m in many[1:]]


def test_curves_mark_divergence(result, tmp_path):
    spec = FigureSpec("fig4", "Curves", "c", "curves", {
        "series": [{"label": m, "experiment": "main", "run": m, "group": "init 0"}
                   for m in METHODS],
        "columns": ["train_loss", "test_accuracy"], "x": "gradient_evaluations"})
    drawn = draw(spec, result, tmp_path)
    _files_ok(drawn)
    # rk2-heun: 1e30 at epoch 2 and NaN at epochs 3, 4 -> 3 clipped train losses
    assert drawn.clipped["rk2-heun (init 0)/train_loss"] == 3
    assert drawn.clipped["sgd (init 0)/train_loss"] == 0
    assert drawn.clipped["rk2-heun (init 0)/test_accuracy"] == 0


def test_bars_and_matrix(result, tmp_path):
    rows = [(a, b, 0.0 if a == b else abs(i - j) * 0.2) for i, a in enumerate(METHODS)
            for j, b in enumerate(METHODS)]
    rows[1] = (rows[1][0], rows[1][1], np.inf)
    pd.DataFrame(rows, columns=["a", "b", "fdist"]).to_csv(result.root / "tables/d.csv",
                                                           index=False)
    spec = FigureSpec("dist", "Distances", "c", "matrix",
                      {"table": "tables/d.csv", "value": "fdist", "row": "a", "col": "b"})
    drawn = draw(spec, result, tmp_path)
    _files_ok(drawn)
    assert drawn.clipped == {"dist": 1}
    bars = pd.DataFrame({"method": METHODS * 2, "split": ["train"] * 3 + ["test"] * 3,
                         "accuracy": [0.9, 0.95, 0.97, 0.88, 0.9, 0.91]})
    bars.to_csv(result.root / "tables/acc.csv", index=False)
    result.tables["acc"] = "tables/acc.csv"
    spec = FigureSpec("fig4b", "Accuracy", "c", "bars",
                      {"table": "acc", "label": "method", "value": "accuracy", "group": "split"})
    drawn = draw(spec, result, tmp_path)
    _files_ok(drawn)
    assert drawn.clipped == {"fig4b": 0}


def test_colours_are_fixed_per_method():
    assert color_for("adam") == OPTIMIZER_COLORS["adam"] == color_for("Adam@seed3")
    assert color_for("sgd:epoch=10") == OPTIMIZER_COLORS["sgd"]
    names = ["sgd", "sgdm", "rmsprop", "adadelta", "adam", "adagrad", "rk2-midpoint",
             "rk2-heun", "rk2-ralston", "adam+rk2-heun"]
    assert len({color_for(n) for n in names}) == len(names)
    # switches mix their two methods; different switch points differ
    switches = {color_for(f"sgd-to-adam-{p}") for p in (25, 50, 75)}
    assert len(switches) == 3 and not switches & {color_for("sgd"), color_for("adam")}
    assert color_for("sgd-2xlr") not in (color_for("sgd"), color_for("adam"))


def test_errors_name_the_problem(result, tmp_path):
    spec = FigureSpec("x", "t", "c", "surface", {"surface": "s/missing.zarr"})
    with pytest.raises(LossurfError, match="does not exist; run the 'optimizers' recipe"):
        draw(spec, result, tmp_path)
    spec = FigureSpec("x", "t", "c", "surface", {})
    with pytest.raises(LossurfError, match=r"lacks data \['surface'\]"):
        draw(spec, result, tmp_path)
    line_store(result.root / "s/a.zarr")
    spec = FigureSpec("x", "t", "c", "surface", {"surface": "s/a.zarr"})
    with pytest.raises(LossurfError, match="needs a 2-D store"):
        draw(spec, result, tmp_path)
    spec = FigureSpec("x", "t", "c", "lines", {"series": [{"label": "a", "surface": "s/a.zarr"}],
                                               "var": "perplexity"})
    with pytest.raises(LossurfError, match="no variable 'perplexity'"):
        draw(spec, result, tmp_path)
    spec = FigureSpec("x", "t", "c", "lines", {})
    spec.kind = "radar"
    with pytest.raises(LossurfError, match="unknown kind 'radar'; valid kinds: lines"):
        draw(spec, result, tmp_path)


def test_fresh_process_no_global_state_and_same_colours():
    # one subprocess (imports are slow here): importing lossurf.plots loads no pyplot and
    # changes no rc setting, and unknown labels get the same colour in another process
    # (a hash of the name, not Python's salted hash())
    code = (
        "import matplotlib; size = matplotlib.rcParams['font.size']; "
        "import lossurf.plots, sys; "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert matplotlib.rcParams['font.size'] == size; "
        "print(lossurf.plots.color_for('my-method'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == color_for("my-method")


# ---- series styles: seeds, switch points and batch norm are told apart (issue 9) ----------


def test_series_styles_differ_by_seed_switch_point_and_bn():
    from lossurf.plots.style import SEED_LINESTYLES, SWITCH_MARKERS, series_style

    seeds = [series_style(f"sgd (seed {k})") for k in range(3)]
    assert [s.linestyle for s in seeds] == list(SEED_LINESTYLES[:3])
    assert {s.color for s in seeds} == {color_for("sgd")}  # one method, one colour
    assert series_style("adam@seed1") == series_style("adam (seed 1)")
    switches = [series_style(f"sgd -> adam at {p}%") for p in (25, 50, 75)]
    assert [s.marker for s in switches] == [SWITCH_MARKERS[p] for p in (25, 50, 75)]
    assert switches[1].color == color_for("sgd-to-adam-50")  # the mix, weighted by the switch
    assert len({s.color for s in switches}) == 3
    assert series_style("sgd -> adam after epoch 1 (50%)") == switches[1]
    with_bn = series_style("N(-10, 0.01), with BN", "N(-10, 0.01)")
    without = series_style("N(-10, 0.01), without BN", "N(-10, 0.01)")
    assert with_bn.color != without.color and with_bn.linestyle != without.linestyle
    assert without.marker and without.hollow and not with_bn.marker
    # the variant may be named by the group only (Fig. 8's "sgd, no-bn")
    bn, no_bn = series_style("sgd (seed 0)", "sgd, bn"), series_style("sgd (seed 0)", "sgd, no-bn")
    assert bn.color != no_bn.color and bn.marker != no_bn.marker
    assert series_style("sgd only", "sgd -> adam").color == color_for("sgd")


def _line_looks(drawing) -> list[tuple]:
    ax = drawing.figure.axes[0]
    return [(line.get_color(), line.get_linestyle(), line.get_marker())
            # not the clip marks, not the landmarks (zorder 0)
            for line in ax.get_lines() if line.get_linestyle() != "None" and line.get_zorder()]


def test_drawn_lines_tell_seeds_and_bn_apart(result):
    from lossurf.plots.draw import DRAWERS

    for name in ("a", "b", "c", "d"):
        line_store(result.root / f"s/{name}.zarr")
    seeds = FigureSpec("f5", "t", "c", "lines", {"series": [
        {"label": "sgd (seed 0)", "surface": "s/a.zarr", "group": "sgd"},
        {"label": "sgd (seed 1)", "surface": "s/b.zarr", "group": "sgd"}], "panels_by": "group"})
    looks = _line_looks(DRAWERS["lines"](seeds, result))
    assert len(looks) == 2 and looks[0][0] == looks[1][0] and looks[0][1] != looks[1][1]
    fig11 = FigureSpec("f11", "t", "c", "lines", {"series": [
        {"label": "N(-1, 1), with BN", "surface": "s/c.zarr", "group": "N(-1, 1)"},
        {"label": "N(-1, 1), without BN", "surface": "s/d.zarr", "group": "N(-1, 1)"}],
        "panels_by": "group"})
    (c1, ls1, m1), (c2, ls2, m2) = _line_looks(DRAWERS["lines"](fig11, result))
    assert c1 != c2 and ls1 != ls2 and m1 != m2


def test_drawn_curves_tell_seeds_and_switch_points_apart(result):
    from lossurf.plots.draw import DRAWERS

    spec = FigureSpec("f7", "t", "c", "curves", {"columns": ["train_loss"], "x": "epoch",
                      "series": [{"label": "sgd (seed 0)", "experiment": "main", "run": "sgd"},
                                 {"label": "sgd (seed 1)", "experiment": "main", "run": "adam"},
                                 {"label": "sgd -> adam at 25%", "experiment": "main",
                                  "run": "sgd"},
                                 {"label": "sgd -> adam at 75%", "experiment": "main",
                                  "run": "adam"}]})
    looks = _line_looks(DRAWERS["curves"](spec, result))
    assert len(looks) == 4 and len(set(looks)) == 4
    assert looks[0][1] != looks[1][1]  # seeds: line style
    assert looks[2][2] != looks[3][2] and looks[2][0] != looks[3][0]  # switch: marker, colour


def test_lines_mark_only_the_anchors_inside_the_lines(result, tmp_path):
    import xarray as xr

    from lossurf.plots.lines import draw_lines

    alphas = np.linspace(-0.05, 0.05, 11)  # a short probe around the init
    xr.Dataset({"loss": (("alpha",), 2.3 + alphas)}, coords={"alpha": alphas}).to_zarr(
        result.root / "s/probe.zarr", consolidated=False)
    line_store(result.root / "s/full.zarr")  # alpha from -0.5 to 1.5
    for surface, marked in (("s/probe.zarr", [0.0]), ("s/full.zarr", [0.0, 1.0])):
        spec = FigureSpec("p", "t", "c", "lines", {"series": [{"label": "a", "surface": surface}]})
        ax = draw_lines(spec, result).figure.axes[0]
        vertical = sorted({float(line.get_xdata()[0]) for line in ax.lines
                           if line.get_linestyle() == ":" and len(set(line.get_xdata())) == 1})
        assert vertical == marked, surface
        assert ax.get_xlim()[1] < 0.2 if surface == "s/probe.zarr" else ax.get_xlim()[1] > 1.0
