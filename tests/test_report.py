"""The HTML report: one self-contained file with every figure, claim, provenance and plotly
surface; nothing external outside the inlined plotly bundle; every text escaped."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _plot_data import METHODS, claims, line_store, plane_store, recipe

from lossurf.errors import LossurfError
from lossurf.experiments.result import FigureSpec
from lossurf.report import find_results, write_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    surfaces = {"sgd|adam": "surfaces/p.zarr"}
    distances = {"sgd|adam": "surfaces/d.zarr"}
    figures = [
        FigureSpec("table1", "Table 1: <pairs>", "grid caption", "pair_grid",
                   {"methods": ["sgd", "adam"], "surfaces": surfaces, "distances": distances}),
        FigureSpec("fig2", "Fig. 2 bilinear & co", "surface caption", "surface",
                   {"surface": "surfaces/p.zarr"}),
        FigureSpec("fig4", "Fig. 4 accuracy", "curves caption", "curves",
                   {"series": [{"label": m, "experiment": "main", "run": m} for m in METHODS],
                    "columns": ["train_accuracy", "test_accuracy"], "x": "epoch"}),
        FigureSpec("broken", "A broken figure", "c", "surface", {"surface": "surfaces/none.zarr"}),
    ]
    first = recipe(out, "optimizers", "4.1", figures)
    plane_store(first.root / "surfaces/p.zarr", spoil={(3, 3): np.inf})
    line_store(first.root / "surfaces/d.zarr", distances=True)
    # the second recipe comes first on disk but second in the paper's order
    second = recipe(out, "restarts", "4.2", [
        FigureSpec("fig10", "Fig. 10 past the minimum", "lines caption", "lines",
                   {"series": [{"label": "sgd", "surface": "surfaces/l.zarr"}], "x": "alpha",
                    "var": "loss"})])
    line_store(second.root / "surfaces/l.zarr", spoil={4: 1e30})
    # a run name with markup must come out escaped
    (second.root / "experiments/main/runs/<script>alert(1)").mkdir()
    second.figures[0].caption += " <script>alert(2)</script>"
    second.save()
    rows = claims(out)
    path = write_report(out)
    return out, path, path.read_text(), rows


def _outside_bundle(text: str) -> str:
    start = text.index('<script id="plotly-bundle">')
    end = text.index("</script>", start)
    return text[:start] + text[end:]


def test_one_self_contained_file(report):
    out, path, text, _ = report
    assert path == out / "report.html"
    assert text.count('<script id="plotly-bundle">') == 1
    assert len(text) - len(_outside_bundle(text)) > 1_000_000  # plotly.js is inlined
    rest = _outside_bundle(text)
    assert "<script src" not in rest.lower()
    assert "http://" not in rest and "https://" not in rest
    assert "<link" not in rest.lower() and "@import" not in rest
    assert "Plotly.newPlot" in rest and rest.count('class="plotly-graph-div"') == 2


def test_element_ids_are_unique(report):
    # Plotly draws into the element with its div's id: a figure sharing that id gets the plot.
    _, _, text, _ = report
    ids = re.findall(r'<(?:div|figure|section|tr|nav|h2|h3)[^>]*\sid="([^"]+)"', _outside_bundle(text))
    assert ids and len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_figure_title_caption_and_file(report):
    out, _, text, _ = report
    for title in ("Table 1: &lt;pairs&gt;", "Fig. 2 bilinear &amp; co", "Fig. 4 accuracy",
                  "Fig. 10 past the minimum"):
        assert title in text
    for caption in ("grid caption", "surface caption", "curves caption", "lines caption"):
        assert caption in text
    for stem in ("optimizers-table1", "optimizers-fig2", "optimizers-fig4", "restarts-fig10",
                 "optimizers-table1-sgd-adam"):
        assert (out / "figures" / f"{stem}.png").is_file()
        assert (out / "figures" / f"{stem}.pdf").is_file()
        assert f'href="figures/{stem}.pdf"' in text
    assert _outside_bundle(text).count("data:image/png;base64,") == 5  # 4 figures + 1 part
    # the broken figure shows its error in place; the others still drew
    assert "This figure could not be drawn" in text and "none.zarr does not exist" in text
    # clipped points are said in the caption
    assert "1 divergent, infinite or NaN value clipped" in text


def test_sections_in_paper_order_with_contents(report):
    out, _, text, _ = report
    assert [r.recipe for r in find_results(out)] == ["optimizers", "restarts"]
    assert text.index('id="recipe-optimizers"') < text.index('id="recipe-restarts"')
    assert '<a href="#recipe-optimizers">' in text and '<a href="#claims">' in text
    assert "Recipes that did not run: switching, batchnorm, runge-kutta, init" in text


def test_claims_with_badges(report):
    *_, text, rows = report
    table = text[text.index('<section id="claims">'):text.index("</section>",
                                                                text.index('id="claims"'))]
    for claim in rows:
        assert claim.claim.replace("'", "&#x27;") in table
        assert claim.quantity in table
    badge = {
        r.number: re.search(rf'id="claim-{r.number}".*?class="badge ([a-z-]+)"', table).group(1)
        for r in rows
    }
    # claim 8's recipe (runge-kutta) did not run: not tested
    assert badge == {1: "held", 5: "not-held", 8: "not-tested"}
    assert "HELD</span>" in table and "NOT HELD</span>" in table and "NOT TESTED</span>" in table


def test_provenance_and_escaping(report):
    *_, text, _ = report
    for needed in ("lossurf demo", "2.13.0", "experiment.yaml", "ab" * 32,
                   "training wall time", "barrier/sgd|adam", "<details>"):
        assert needed in text
    assert "<script>alert(1)" not in text and "<script>alert(2)" not in text
    assert "&lt;script&gt;alert(1)" in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text


def test_without_claims_or_recipes(tmp_path):
    (tmp_path / "switching").mkdir()
    (tmp_path / "switching/result.json").write_text("{not json")
    path = write_report(tmp_path)
    text = path.read_text()
    assert "No claims.json" in text and "Recipes that did not run: optimizers" in text
    assert "Unreadable result:" in text and "switching/result.json is corrupted" in text
    with pytest.raises(LossurfError, match="is not a directory; pass the --out"):
        write_report(tmp_path / "nowhere")
