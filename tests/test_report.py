"""The HTML report: one self-contained file with every figure, claim, provenance and plotly
surface; nothing external outside the inlined plotly bundle; every text escaped."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

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
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LossurfError, match=r"empty holds no recipe results \(no \*/result.json\); "
                                           r"pass the --out of `lossurf run` or `lossurf demo`"):
        write_report(empty)
    (empty / "experiment.yaml").write_text("name: x\n")
    with pytest.raises(LossurfError, match="it is an experiment directory of `lossurf train`: "
                                           "draw its surfaces with `lossurf plot STORE`"):
        write_report(empty)
    assert not (empty / "report.html").exists() and not (empty / "figures").exists()


# ---- the banner, surface settings, command, permissions, redraws (issue 9) ----------------

_DIGITS_CONFIG = """name: main
data: {name: digits}
model:
  name: cnn-small
  options: {batch_norm: true}
  init: {scheme: default, mean: 0.0, std: 1.0}
seeds: [0]
epochs: 4
eval_subset: 512
"""


def _small(out, *, config: str = _DIGITS_CONFIG):
    """A cheap report: a lines figure over two stores and a curves figure (no 3-D)."""
    figures = [
        FigureSpec("fig10", "Fig. 10", "lines caption", "lines",
                   {"series": [{"label": "sgd (seed 0)", "surface": "surfaces/l0.zarr"},
                               {"label": "sgd (seed 1)", "surface": "surfaces/l1.zarr"}]}),
        FigureSpec("fig6", "Fig. 6", "basin caption", "lines",
                   {"series": [{"label": "sgd", "surface": "surfaces/b.zarr"}], "x": "lambda"}),
        FigureSpec("fig4", "Fig. 4", "curves caption", "curves",
                   {"series": [{"label": m, "experiment": "main", "run": m} for m in METHODS],
                    "columns": ["train_loss"], "x": "epoch"}),
    ]
    result = recipe(out, "restarts", "4.2", figures)
    (result.root / "experiments/main/experiment.yaml").write_text(config)
    line_store(result.root / "surfaces/l0.zarr")
    line_store(result.root / "surfaces/l1.zarr", scale=2.0)
    line_store(result.root / "surfaces/b.zarr", x="lambda")
    return result


def _figure_html(text: str, anchor: str) -> str:
    start = text.index(f'<figure id="{anchor}">')
    return text[start:text.index("</figure>", start)]


def test_banner_names_the_scale_and_says_proxy(tmp_path):
    import sklearn.datasets

    from lossurf import data, models
    from lossurf.config import DataSpec

    _small(tmp_path)
    text = write_report(tmp_path).read_text()
    banner = text[text.index('id="banner"'):text.index("</div>", text.index('id="banner"'))]
    dataset = data.load(DataSpec(name="digits"))
    train, test = len(dataset.train_y), len(dataset.test_y)
    assert train + test == len(sklearn.datasets.load_digits().target)  # every image, once
    count = sum(p.numel() for p in models.build(
        {"name": "cnn-small", "options": {"batch_norm": True}}).parameters())
    for needed in ("<th>preset</th><td>digits</td>", f"digits ({train:,} train / {test:,} test)",
                   f"cnn-small with BN ({count:,} parameters)", "<th>epochs</th><td>4</td>",
                   "512 training examples", "21 (alpha)", "21 (lambda)",
                   "small proxy of the paper", "CIFAR-10 NIN/VGG, 200 epochs"):
        assert needed in banner, needed


def test_banner_at_the_papers_scale_is_not_a_proxy(tmp_path):
    config = ("name: main\ndata: {name: cifar10}\nmodel: {name: nin, options: {}}\n"
              "seeds: [0]\nepochs: 200\neval_subset: 10000\n")
    _small(tmp_path, config=config)
    text = write_report(tmp_path).read_text()
    assert "small proxy" not in text and "at the paper's scale" in text
    assert "<th>epochs</th><td>200</td>" in text


def test_surface_settings_beside_each_surface_figure(tmp_path):
    import xarray as xr

    result = _small(tmp_path)
    store = result.root / "surfaces/l0.zarr"
    ds = xr.open_zarr(store).load()
    ds.attrs.update(data="custom n=256 sha256=c411d85adb3fc07b", bn="recompute")
    from _plot_data import write_store

    write_store(store, ds)
    text = write_report(tmp_path).read_text()
    lines = _figure_html(text, "restarts-fig10")
    assert ("Surface settings:</b> grid 21 (alpha), 256 examples per point, BN statistics: "
            "recompute; grid 21 (alpha)") in lines
    assert "Surface settings:</b> grid 21 (lambda)" in _figure_html(text, "restarts-fig6")
    assert "Surface settings" not in _figure_html(text, "restarts-fig4")  # metrics only


def test_command_and_wall_times_over_resumes(tmp_path, monkeypatch):
    import sys

    from lossurf import demo as demo_module

    _small(tmp_path)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/lossurf", "demo", "--out", "my out"])
    command = demo_module._command(tmp_path, "digits")
    assert command == "lossurf demo --out 'my out'"
    demo_module._record(tmp_path, {"id": "a", "command": command, "started": "s1",
                                   "wall_time": 100.25, "finished": False})
    second = {"id": "b", "command": command, "started": "s2", "wall_time": 3.0, "finished": False}
    demo_module._record(tmp_path, second)  # at its start; then it ends: the row is replaced
    demo_module._record(tmp_path, {**second, "wall_time": 20.5, "finished": True})
    assert len(demo_module.read_invocations(tmp_path)) == 2
    monkeypatch.setattr(sys, "argv", ["python"])
    assert demo_module._command(tmp_path, "digits").startswith("lossurf.demo(out=")
    text = write_report(tmp_path).read_text()
    banner = text[text.index('id="banner"'):]
    assert "lossurf demo --out &#x27;my out&#x27; (started s2)" in banner
    assert ("120.8 s over 2 processes (resumes included), 1 of them interrupted; the last "
            "took 20.5 s") in banner
    # per run, the metrics' last wall_time (carried over resumes by the engine): 4 x 0.25 s,
    # three runs: 3.0 s for the recipe
    assert "summed over every process that trained them (resumes included) 3.0 s" in text
    assert "last training command (manifest.json)" in text


def test_outputs_have_the_usual_permissions(tmp_path):
    import os
    import stat

    _small(tmp_path)
    previous = os.umask(0o022)
    try:
        write_report(tmp_path)
    finally:
        os.umask(previous)
    written = [tmp_path / "report.html", tmp_path / "figures/drawn.json",
               *sorted((tmp_path / "figures").glob("*.p*"))]
    assert len(written) == 2 + 6
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {"0o644"}


def test_a_report_moved_alone_refers_only_to_its_pdfs(tmp_path):
    _small(tmp_path / "out")
    text = write_report(tmp_path / "out").read_text()
    moved = tmp_path / "elsewhere/report.html"
    moved.parent.mkdir()
    moved.write_text(text)
    rest = _outside_bundle(text)
    links = re.findall(r'(?:href|src)="([^"]+)"', rest)
    outside = [u for u in links if not u.startswith(("#", "data:"))]
    assert outside and all(re.fullmatch(r"figures/[\w.+-]+\.pdf", u) for u in outside), outside
    assert "Its only references to other files are the PDF links" in text


def test_a_rerun_redraws_only_what_changed(tmp_path):
    result = _small(tmp_path)
    first: list[str] = []
    write_report(tmp_path, redrawn=first)
    assert sorted(first) == ["restarts/fig10", "restarts/fig4", "restarts/fig6"]
    png = tmp_path / "figures/restarts-fig6.png"
    before = png.stat().st_mtime_ns
    again: list[str] = []
    text = write_report(tmp_path, redrawn=again).read_text()
    assert again == [] and png.stat().st_mtime_ns == before
    assert _outside_bundle(text).count("data:image/png;base64,") == 3  # recorded ones show
    line_store(result.root / "surfaces/b.zarr", x="lambda", scale=3.0)  # new values
    changed: list[str] = []
    write_report(tmp_path, redrawn=changed)
    assert changed == ["restarts/fig6"]
    (tmp_path / "figures/restarts-fig4.png").unlink()  # a lost file is drawn again
    lost: list[str] = []
    write_report(tmp_path, redrawn=lost)
    assert lost == ["restarts/fig4"]
    metrics = result.root / "experiments/main/runs/sgd/metrics.csv"
    metrics.write_text(metrics.read_text().replace("0.1,", "0.2,", 1))  # a run's metrics
    rerun: list[str] = []
    write_report(tmp_path, redrawn=rerun)
    assert rerun == ["restarts/fig4"]
    (tmp_path / "figures/drawn.json").write_text("{damaged")  # no record: all drawn again
    everything: list[str] = []
    write_report(tmp_path, redrawn=everything)
    assert len(everything) == 3


def test_a_copied_or_differently_named_folder_reuses_its_figures(tmp_path, monkeypatch):
    _small(tmp_path / "a")
    write_report(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # the recorded folder is gone
    monkeypatch.chdir(tmp_path)
    for spelling in (Path("b"), tmp_path / "b", Path("./b/")):
        redrawn: list[str] = []
        text = write_report(spelling, redrawn=redrawn).read_text()
        assert redrawn == [], spelling
        links = re.findall(r'href="([^"#]+\.pdf)"', text)
        assert len(links) == 3 and all(re.fullmatch(r"figures/[\w.+-]+\.pdf", u) for u in links)
    # a record from before file names were recorded held the paths as the folder was named
    record = tmp_path / "b/figures/drawn.json"
    payload = json.loads(record.read_text())
    for entry in payload["figures"].values():
        entry["png"] = str(tmp_path / "a/figures" / entry["png"])
        entry["pdf"] = str(tmp_path / "a/figures" / entry["pdf"])
    record.write_text(json.dumps(payload))
    redrawn = []
    write_report(Path("b"), redrawn=redrawn)
    assert redrawn == []
    assert all("/" not in e["png"] for e in json.loads(record.read_text())["figures"].values())


def test_figures_drawn_in_worker_processes_are_the_files_drawn_here(tmp_path, monkeypatch):
    import lossurf.backends

    used: list[int] = []

    class Recording(lossurf.backends.ProcessBackend):
        def map(self, fn, items):
            used.append(self.jobs)
            return super().map(fn, items)

    monkeypatch.setattr(lossurf.backends, "ProcessBackend", Recording)
    pages = {}
    for jobs in (1, 2):
        result = _small(tmp_path / str(jobs))
        result.figures.append(FigureSpec("gone", "Gone", "c", "surface",
                                         {"surface": "surfaces/none.zarr"}))
        result.save()
        redrawn: list[str] = []
        pages[jobs] = write_report(tmp_path / str(jobs), redrawn=redrawn, jobs=jobs).read_text()
        assert sorted(redrawn) == ["restarts/fig10", "restarts/fig4", "restarts/fig6"]
    assert used == [2]  # jobs=1 draws here
    for name in sorted(p.name for p in (tmp_path / "1/figures").glob("*.png")):
        assert (tmp_path / "1/figures" / name).read_bytes() == (tmp_path / "2/figures" / name).read_bytes()
    gone = {j: _figure_html(pages[j], "restarts-gone").replace(str(tmp_path / str(j)), "OUT")
            for j in (1, 2)}
    assert gone[1] == gone[2]
    assert "This figure could not be drawn" in _figure_html(pages[2], "restarts-gone")
    with pytest.raises(LossurfError, match="jobs must be a positive integer, got 0"):
        write_report(tmp_path / "1", jobs=0)


def test_an_interrupted_demo_records_its_time(tmp_path, monkeypatch):
    from lossurf import demo as demo_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "run_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo_module.demo(tmp_path / "out", progress=False)
    rows = demo_module.read_invocations(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["finished"] is False and rows[0]["wall_time"] >= 0
    assert not (tmp_path / "out/report.html").exists()


_KILLED_DEMO = """
import os, signal, sys, time
from types import SimpleNamespace
from lossurf import demo as demo_module

def run_all(preset, out, progress=True, jobs=1, on_recipe=None):
    time.sleep(0.3)
    on_recipe(SimpleNamespace(recipe="optimizers", wall_time=0.3))
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: a lost machine

demo_module.run_all = run_all
demo_module.demo(sys.argv[1], progress=False)
"""


def test_a_killed_demo_keeps_its_time_up_to_its_last_recipe(tmp_path):
    """SIGKILL leaves no chance to clean up: the demo's row is written at its start and after
    each recipe, so the killed process still counts in the report's total."""
    import subprocess
    import sys

    from lossurf import demo as demo_module

    child = subprocess.run([sys.executable, "-c", _KILLED_DEMO, str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr
    rows = demo_module.read_invocations(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["finished"] is False
    assert rows[0]["recipes"] == {"optimizers": 0.3} and rows[0]["wall_time"] >= 0.3
