"""The reproduction report: one self-contained ``report.html`` from a recipes' output directory.

``write_report(OUT)`` finds every ``OUT/<recipe>/result.json``, draws each figure into
``OUT/figures/<recipe>-<key>.png/.pdf`` (:func:`lossurf.plots.draw`), reads ``OUT/claims.json``
and writes ``OUT/report.html``:

- a reproduction table, claim by claim: the paper's number next to ours, the threshold, a
  HELD / NOT HELD / INCONCLUSIVE / NOT TESTED verdict and why; then the runs that did not
  train or diverged (``OUT/training.json``);
- one section per recipe in the paper's order (4.1-4.4, A.4-A.6), each figure with its title,
  caption, clipping note and a link to its PDF, and interactive 3-D surfaces;
- each recipe's settings and provenance (config, versions, command, checkpoint hashes, wall
  times) in collapsible ``<details>``.

A banner on top names the preset, data set, model, epochs, evaluation subset and grid sizes
and says when that is a small proxy of the paper's scale (:mod:`lossurf.reporting.context`),
and the command that was run (``OUT/invocations.json``, written by ``lossurf demo``). Every
figure that shows surface stores says their settings (grid, examples per point, BN policy)
beside it. A figure is drawn again only when its inputs or the drawing code changed
(:mod:`lossurf.reporting.cache`).

Adding a figure kind: write a drawer ``(spec, result) -> Drawing`` in ``lossurf/plots/``,
register it in :data:`lossurf.plots.draw.DRAWERS` and add the kind to
:data:`lossurf.experiments.result.FIGURE_KINDS`; the report needs no change (it draws every
spec through ``draw``, and reads the surface settings of any ``*.zarr`` path in its data).

The page opens offline: figures are base64 PNGs, styles are inline, and plotly.js is inlined
once in a ``<script id="plotly-bundle">`` -- the only place where URLs (inside plotly's own
source) appear, and the page says that its PDF links are its only references to other files,
so a report moved alone still works. Every text from the data is escaped. A figure that cannot
be drawn shows its error in place; recipes that did not run have no section and their claims
read NOT TESTED.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path
from typing import Any

from lossurf.errors import LossurfError
from lossurf.experiments.result import Claim, RecipeResult
from lossurf.reporting.cache import FigureCache, fingerprint
from lossurf.reporting.context import (
    PAPER_SCALE,
    figure_stores,
    read_invocations,
    scale_of,
    store_settings,
    training_seconds,
)
from lossurf.runs import atomic_write_text

__all__ = ["write_report", "RECIPE_ORDER", "find_results"]

#: Recipes in the paper's order; others follow alphabetically.
RECIPE_ORDER = ("optimizers", "restarts", "switching", "batchnorm", "runge-kutta", "init")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:16px;
 line-height:1.45;max-width:1180px;margin:0 auto;padding:1em 1.5em;color:#222}
h1{font-size:1.7em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
figure{margin:1.5em 0;padding:.8em;border:1px solid #e4e4e4;border-radius:6px}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:.95em;color:#333;margin-top:.5em}
figure h3{margin:.1em 0 .5em 0;font-size:1.15em}
table{border-collapse:collapse;margin:.8em 0;font-size:.95em;display:block;max-width:100%;
 overflow-x:auto}
.claims td{overflow-wrap:anywhere}
th,td{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}
th{background:#f3f3f3}
.badge{display:inline-block;padding:.15em .6em;border-radius:4px;font-weight:bold;
 font-size:.85em;white-space:nowrap}
.held{background:#1a7f37;color:#fff}.not-held{background:#cf222e;color:#fff}
.not-tested{background:#d0d7de;color:#24292f}
.inconclusive{background:#bf8700;color:#fff}
.error{background:#fff4f4;border:1px solid #cf222e;padding:.5em;border-radius:4px}
.note{color:#8a4b00}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
.plotly-holder{margin-top:.8em;width:100%;overflow:hidden}nav ol{columns:2}
.plotly-holder .plotly-graph-div{width:100%!important}
.banner{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.6em 1em}
.banner table{margin:.3em 0}.banner th{background:none;width:11em}
.proxy{background:#fff8c5;border:1px solid #bf8700;border-radius:4px;padding:.3em .6em}
.settings{font-size:.9em;color:#444;margin:.3em 0}
"""


def _e(value: Any) -> str:
    """Escape any value for HTML text and attributes."""
    return html.escape(str(value), quote=True)


def find_results(out: Path, problems: list[str] | None = None) -> list[RecipeResult]:
    """Every readable ``OUT/*/result.json``, in the paper's order.

    Args:
        out: the output directory.
        problems: if given, collects one message per unreadable result.json (which are
            skipped); otherwise an unreadable one raises.
    """
    results = []
    for path in sorted(Path(out).glob("*/result.json")):
        try:
            results.append(RecipeResult.load(path.parent))
        except (LossurfError, TypeError, ValueError) as err:
            if problems is None:
                raise
            problems.append(f"{path}: {err}; run that recipe again")

    def rank(r: RecipeResult) -> tuple:
        order = RECIPE_ORDER.index(r.recipe) if r.recipe in RECIPE_ORDER else len(RECIPE_ORDER)
        return (order, r.recipe)

    return sorted(results, key=rank)


def _badge(held: bool | None, tested: bool = False) -> str:
    if held is True:
        return '<span class="badge held">HELD</span>'
    if held is False:
        return '<span class="badge not-held">NOT HELD</span>'
    if tested:
        return '<span class="badge inconclusive">INCONCLUSIVE</span>'
    return '<span class="badge not-tested">NOT TESTED</span>'


def _claims_table(out: Path, ran: set[str]) -> str:
    path = out / "claims.json"
    if not path.is_file():
        return ('<p class="note">No claims.json in this output: the reproduction table is '
                "computed after all recipes (run <code>lossurf run all</code>).</p>")
    claims = Claim.load_all(path)
    rows = []
    for c in sorted(claims, key=lambda c: c.number):
        # the verdict is claims.json's (computed from the data); a claim whose recipe did not
        # run is not tested whatever the file says; one whose recipe ran but whose data cannot
        # decide it is inconclusive, and "why" says what is missing
        tested = c.recipe in ran
        held = c.held if tested else None
        why = c.reason if tested else f"the {c.recipe} recipe did not run"
        rows.append(
            f'<tr id="claim-{_e(c.number)}"><td>{_e(c.number)}</td><td>{_e(c.claim)}</td>'
            f"<td>{_e(c.quantity)}</td><td>{_e(c.paper)}</td><td>{_e(c.measured)}</td>"
            f"<td>{_e(c.threshold)}</td><td>{_badge(held, tested)}</td><td>{_e(why)}</td>"
            f"<td>{_e(c.recipe)}</td></tr>"
        )
    return ('<table class="claims"><tr><th>#</th><th>claim of the paper</th>'
            "<th>quantity that tests it</th><th>the paper's number</th><th>measured here</th><th>threshold</th>"
            "<th>verdict</th><th>why</th><th>recipe</th></tr>" + "".join(rows)
            + "</table>" + _outcomes_table(out))


def _outcomes_table(out: Path) -> str:
    """Runs the claims rest on that did not train or diverged (``OUT/training.json``)."""
    path = out / "training.json"
    if not path.is_file():
        return ""
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f'<p class="error">training.json could not be read: {_e(err)}</p>'
    bad = [r for r in rows if r.get("outcome") != "trained"]
    if not bad:
        return (f'<p>All {len(rows)} runs behind these claims trained (none at chance, none '
                "with a growing loss, none diverged).</p>")
    body = "".join(
        f"<tr><td>{_e(r.get('recipe'))}</td>"
        f"<td>{_e(Path(str(r.get('experiment', ''))).name)}</td><td>{_e(r.get('run'))}</td>"
        f"<td>{_e(r.get('status'))}</td><td><b>{_e(r.get('outcome'))}</b></td>"
        f"<td>{_e(r.get('reason'))}</td></tr>" for r in bad)
    return ('<h3 id="untrained-runs">Runs that did not train</h3><p class="note">These runs '
            "never trained (accuracy at chance, or the loss grew) or diverged; a claim that "
            "compares them says nothing about their method.</p><table><tr><th>recipe</th>"
            "<th>experiment</th><th>run</th><th>status</th><th>outcome</th><th>why</th></tr>" + body + "</table>")


def _img(path: Path, alt: str, width_in: float) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    # 100 CSS px per inch: every figure's 10-11 pt text shows at the same ~14 px
    width = int(round(width_in * 100))
    return (f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" '
            f'style="width:{width}px">')


def _surface_settings(spec, result: RecipeResult) -> str:
    """One line naming the grid, examples per point and BN policy of a figure's stores."""
    texts: list[str] = []
    for store in figure_stores(spec, result):
        settings = store_settings(store)
        if settings is not None and settings.text() not in texts:
            texts.append(settings.text())
    if not texts:
        return ""
    return f'<p class="settings"><b>Surface settings:</b> {_e("; ".join(texts))}</p>'


#: What a figure's drawing raises on data it cannot draw: shown in its place, not raised.
_DRAW_ERRORS = (LossurfError, OSError, KeyError, ValueError, TypeError)
#: Fewer figures to draw than this are drawn here: worker processes take seconds to start.
PARALLEL_MIN_FIGURES = 4


def draw_one(item: tuple[str, Any, RecipeResult, Path]) -> tuple[str, Any]:
    """``(key, DrawnFigure)`` of one figure, or ``(key, message)`` if it cannot be drawn (a
    module-level function: it runs in worker processes too)."""
    from lossurf.plots import draw

    key, spec, result, figures_dir = item
    try:
        return key, draw(spec, result, figures_dir)
    except _DRAW_ERRORS as err:
        return key, str(err)


def draw_figures(items: list[tuple[str, Any, RecipeResult, Path]],
                 jobs: int | None = None) -> dict[str, Any]:
    """Draw ``items`` (``(key, spec, result, figures_dir)``), ``jobs`` at a time in worker
    processes: each figure is independent and matplotlib runs on one core, so the report's
    drawing scales with the cores (by default the usable ones, and here when there are fewer
    than :data:`PARALLEL_MIN_FIGURES` figures). Returns ``key -> DrawnFigure or message``."""
    from lossurf.backends import ProcessBackend
    from lossurf.threads import usable_cores

    workers = min(jobs if jobs is not None else usable_cores(), len(items))
    if workers <= 1 or (jobs is None and len(items) < PARALLEL_MIN_FIGURES):
        return dict(draw_one(item) for item in items)
    with ProcessBackend(workers, threads=1) as pool:
        return dict(pool.map(draw_one, items))


def _figure(spec, result: RecipeResult, out: Path, drawn: Any) -> str:
    """One figure's HTML from its drawing (a DrawnFigure, or why it could not be drawn)."""
    anchor = _e(f"{result.recipe}-{spec.key}")
    head = f'<figure id="{anchor}"><h3>{_e(spec.title)}</h3>'
    if isinstance(drawn, str):
        return (head + f'<div class="error">This figure could not be drawn: {_e(drawn)}</div>'
                f"<figcaption>{_e(spec.caption)}</figcaption></figure>")
    body = [head, _surface_settings(spec, result), _img(drawn.png, spec.title, drawn.width_in)]
    notes = " ".join(drawn.notes)
    pdf = drawn.pdf.relative_to(out).as_posix()
    body.append(f"<figcaption>{_e(spec.caption)}"
                + (f' <span class="note">{_e(notes)}</span>' if notes else "")
                + f' <a href="{_e(pdf)}">PDF</a></figcaption>')
    if drawn.parts:
        inner = "".join(
            f"<h4>{_e(p.title)}</h4>{_img(p.png, p.title, p.width_in)}"
            f'<p><a href="{_e(p.pdf.relative_to(out).as_posix())}">PDF</a></p>'
            for p in drawn.parts
        )
        body.append(f"<details><summary>One figure per pair ({len(drawn.parts)})</summary>"
                    f"{inner}</details>")
    if drawn.html_fragment:
        body.append('<div class="plotly-holder"><p><b>Interactive 3-D</b> (drag to rotate'
                    + ("; choose the pair in the menu" if "updatemenus" in drawn.html_fragment
                       else "") + f")</p>{drawn.html_fragment}</div>")
    body.append("</figure>")
    return "".join(body)


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _experiment_provenance(name: str, root: Path) -> str:
    parts = [f"<details><summary>experiment {_e(name)} ({_e(root.name)})</summary>"]
    config = _read(root / "experiment.yaml")
    if config is not None:
        parts.append(f"<details><summary>config (experiment.yaml)</summary><pre>{_e(config)}"
                     "</pre></details>")
    manifest = _read(root / "manifest.json")
    if manifest is not None:
        try:
            info = json.loads(manifest)
        except json.JSONDecodeError:
            info = {}
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(info[k])}</td></tr>"
                       for k in ("lossurf", "torch", "python") if k in info)
        if "command" in info:
            # every recipe sharing the experiment rewrites it: it names the last one to train
            rows += ("<tr><th>last training command (manifest.json)</th>"
                     f"<td><code>{_e(info['command'])}</code></td></tr>")
        parts.append(f"<table>{rows}</table>")
    runs_dir = root / "runs"
    rows = []
    for run_dir in sorted(p for p in runs_dir.glob("*") if p.is_dir()):
        status_text = _read(run_dir / "status.json")
        status = json.loads(status_text) if status_text else {"status": "not started"}
        seconds = training_seconds(run_dir / "metrics.csv")
        wall = "" if seconds is None else f"{seconds:.1f}"
        hashes = "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>"
                             for k, v in sorted(status.get("checkpoints", {}).items()))
        rows.append(f"<tr><td>{_e(run_dir.name)}</td><td>{_e(status.get('status'))}</td>"
                    f"<td>{_e(status.get('epochs_done', ''))}</td><td>{wall}</td>"
                    f"<td>{hashes}</td></tr>")
    if rows:
        parts.append("<table><tr><th>run</th><th>status</th><th>epochs</th>"
                     "<th>training wall time (s), all processes</th>"
                     "<th>checkpoint sha256</th></tr>"
                     + "".join(rows) + "</table>")
    parts.append("</details>")
    return "".join(parts)


def _training_total(result: RecipeResult) -> float:
    """Training seconds of every run of the recipe's experiments, summed over resumes."""
    total = 0.0
    for relative in result.experiments.values():
        for run_dir in result.path(relative).glob("runs/*"):
            total += training_seconds(run_dir / "metrics.csv") or 0.0
    return total


def _provenance(result: RecipeResult) -> str:
    parts = ["<details><summary>Settings and provenance</summary>",
             f"<p>preset <b>{_e(result.preset)}</b>; wall time of the recipe's last process "
             f"{result.wall_time:.1f} s; training time of its runs, summed over every process "
             f"that trained them (resumes included) {_training_total(result):.1f} s; directory "
             f"<code>{_e(result.root)}</code></p>"]
    for name, relative in sorted(result.experiments.items()):
        parts.append(_experiment_provenance(name, result.path(relative)))
    if result.measurements:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v))}</td></tr>"
                       for k, v in sorted(result.measurements.items()))
        parts.append("<details><summary>measurements</summary><table><tr><th>quantity</th>"
                     f"<th>value</th></tr>{rows}</table></details>")
    parts.append("</details>")
    return "".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _section(result: RecipeResult, out: Path, drawn: dict[str, Any]) -> str:
    anchor = _e(f"recipe-{result.recipe}")
    body = [f'<section id="{anchor}"><h2>{_e(result.section)} {_e(result.title)}</h2>',
            _provenance(result)]
    body += [_figure(spec, result, out, drawn[f"{result.recipe}/{spec.key}"])
             for spec in result.figures]
    if not result.figures:
        body.append("<p>This recipe draws no figures.</p>")
    body.append("</section>")
    return "".join(body)


def _listing(values: list) -> str:
    return ", ".join(str(v) for v in values) if values else "not recorded"


def _banner(out: Path, results: list[RecipeResult]) -> str:
    """What was run, at what scale, by which command (the top of the page)."""
    if not results:
        return ""
    scale = scale_of(results)
    rows = [("preset", _listing(scale.presets)), ("data set", _listing(scale.data)),
            ("model", _listing(scale.models)), ("epochs", _listing(scale.epochs)),
            ("evaluation subset", _listing([f"{n} training examples" for n in
                                            scale.eval_subsets])),
            ("surface grids", _listing(scale.grids))]
    invocations = read_invocations(out)
    if invocations:
        last = invocations[-1]
        total = sum(float(r.get("wall_time") or 0.0) for r in invocations)
        rows.append(("command", f"{last.get('command', '?')} (started {last.get('started', '?')})"))
        stopped = sum(1 for r in invocations if r.get("finished") is False)
        rows.append(("wall time of the recipes",
                     f"{total:.1f} s over {len(invocations)} process"
                     + ("es (resumes included)" if len(invocations) > 1 else "")
                     + (f", {stopped} of them interrupted" if stopped else "")
                     + f"; the last took {float(last.get('wall_time') or 0.0):.1f} s"))
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    proxy = (f'<p class="proxy">This run is a <b>small proxy of the paper\'s scale</b> '
             f"({_e(PAPER_SCALE)}): its numbers test the paper's claims in kind, not in "
             "magnitude.</p>" if scale.proxy else
             f"<p>This run is at the paper's scale ({_e(PAPER_SCALE)}).</p>")
    return f'<div class="banner" id="banner"><table>{table}</table>{proxy}</div>'


def write_report(out: str | Path, redrawn: list[str] | None = None,
                 jobs: int | None = None) -> Path:
    """Draw every figure of every recipe under ``out`` and write ``out/report.html``.

    Figures whose inputs and drawing code did not change since the last call are not drawn
    again (``OUT/figures/drawn.json`` records what was drawn from what).

    Args:
        out: the output directory of ``lossurf run`` (``OUT/<recipe>/result.json``, and
            ``OUT/claims.json`` once all recipes ran).
        redrawn: if given, receives the ``recipe/key`` of every figure drawn by this call.
        jobs: figures drawn at once, in worker processes (:func:`draw_figures`); default: the
            usable cores. The files are the same whatever the count.

    Returns:
        The path of ``report.html``.

    Raises:
        LossurfError: ``out`` is not a directory or holds no recipe results, or ``jobs`` is
            not a positive integer.
    """
    from lossurf import __version__
    from lossurf.plots import plotly_bundle

    out = Path(out)
    if not out.is_dir():
        raise LossurfError(f"{out} is not a directory; pass the --out of `lossurf run`")
    if not any(out.glob("*/result.json")) and not (out / "claims.json").exists():
        hint = ("; it is an experiment directory of `lossurf train`: draw its surfaces with "
                "`lossurf plot STORE`" if (out / "experiment.yaml").is_file() else "")
        raise LossurfError(f"{out} holds no recipe results (no */result.json){hint}; pass the "
                           "--out of `lossurf run` or `lossurf demo`")
    problems: list[str] = []
    results = find_results(out, problems)
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise LossurfError(f"jobs must be a positive integer, got {jobs!r}")
    figures_dir = out / "figures"
    cache = FigureCache(figures_dir)
    figures = [(f"{r.recipe}/{spec.key}", spec, r) for r in results for spec in r.figures]
    prints = {key: fingerprint(spec, r) for key, spec, r in figures}
    drawn = {key: cache.get(key, prints[key]) for key, _, _ in figures}  # recorded, or None
    fresh = draw_figures([(key, spec, r, figures_dir) for key, spec, r in figures
                          if drawn[key] is None], jobs)
    for key, _, _ in figures:  # recorded in the page's order
        if key in fresh:
            if isinstance(fresh[key], str):
                cache.forget(key)  # it could not be drawn: try again next time
            else:
                cache.put(key, prints[key], fresh[key])
            drawn[key] = fresh[key]
    sections = [_section(r, out, drawn) for r in results]
    if results:
        cache.save({f"{r.recipe}/{s.key}" for r in results for s in r.figures})
    if redrawn is not None:
        redrawn.extend(cache.redrawn)
    toc = "".join(f'<li><a href="#recipe-{_e(r.recipe)}">{_e(r.section)} {_e(r.title)}</a></li>'
                  for r in results)
    missing = [r for r in RECIPE_ORDER if r not in {x.recipe for x in results}]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>lossurf reproduction report</title>",
        f"<style>{_CSS}</style>",
        f'<script id="plotly-bundle">{plotly_bundle()}</script>',
        "</head><body>",
        "<h1>An Empirical Analysis of Deep Network Loss Surfaces: reproduction report</h1>",
        f"<p>lossurf {_e(__version__)}, written {_e(stamp)} from <code>{_e(out)}</code>. "
        "Every number below is computed from this run's data.</p>",
        _banner(out, results),
        '<p class="note">This page is self-contained: figures, styles and plotly.js are inside '
        "it, so it can be moved or mailed alone. Its only references to other files are the "
        "PDF links, to <code>figures/</code> next to it.</p>",
        '<nav><h2>Contents</h2><ol><li><a href="#claims">Reproduction table</a></li>'
        f"{toc}</ol>",
        (f"<p class=\"note\">Recipes that did not run: {_e(', '.join(missing))}.</p>"
         if missing else ""),
        "".join(f'<p class="error">Unreadable result: {_e(p)}</p>' for p in problems),
        "</nav>",
        '<section id="claims"><h2>Reproduction table</h2>',
        _claims_table(out, {r.recipe for r in results}),
        "</section>",
        *sections,
        "</body></html>",
    ]
    path = out / "report.html"
    atomic_write_text(path, "\n".join(page))
    return path
