"""The report in a real browser: headless Chromium at 900 and 1,400 px.

A probe script, inserted at the top of a copy of the page, records every uncaught error,
unhandled rejection and ``console.error``, then (after plotly drew) the bounding box of every
drawn element of every plotly 3-D plot against its container, and writes them into the DOM,
which ``--dump-dom`` returns. Skipped where no ``chromium`` is installed (CI need not have it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from _plot_data import line_store, plane_store, recipe

from lossurf.experiments.result import Claim, FigureSpec
from lossurf.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(apt-get install chromium to run the browser checks)")

PROBE = """<script id="probe">
window.__errors = [];
window.addEventListener("error", e => __errors.push("error: " + e.message));
window.addEventListener("unhandledrejection", e => __errors.push("rejection: " + e.reason));
const __consoleError = console.error;
console.error = function (...args) { __errors.push("console.error: " + args.join(" "));
                                     __consoleError.apply(console, args); };
// Ink on the frame of the plot's own rendering (Plotly.toImage: WebGL scene, axis titles,
// colour bar) means something is cut off at the plot's edge.
function __edgeInk(gd) {
  const w = Math.round(gd._fullLayout.width), h = Math.round(gd._fullLayout.height);
  return Plotly.toImage(gd, {format: "png", width: w, height: h}).then(url => new Promise(ok => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas"); c.width = w; c.height = h;
      const g = c.getContext("2d", {willReadFrequently: true});
      g.fillStyle = "#fff"; g.fillRect(0, 0, w, h); g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, w, h).data, edge = 3, ink = {};
      const dark = (x, y) => { const i = 4 * (y * w + x);
                               return Math.min(px[i], px[i + 1], px[i + 2]) < 200; };
      const count = (xs, ys) => { let n = 0; for (const x of xs) for (const y of ys)
                                    if (dark(x, y)) n++; return n; };
      const range = (a, b) => Array.from({length: b - a}, (_, k) => a + k);
      ink.left = count(range(0, edge), range(0, h)); ink.right = count(range(w - edge, w), range(0, h));
      ink.top = count(range(0, w), range(0, edge)); ink.bottom = count(range(0, w), range(h - edge, h));
      ok(ink);
    };
    img.onerror = () => ok({error: "image did not load"});
    img.src = url;
  }));
}
window.addEventListener("load", () => setTimeout(async () => {
  const view = document.documentElement.clientWidth;
  const plots = [];
  for (const gd of document.querySelectorAll(".js-plotly-plot")) {
    const box = (gd.closest(".plotly-holder") || gd.parentElement).getBoundingClientRect();
    const parts = [...gd.querySelectorAll("svg.main-svg, canvas")]
      .map(el => el.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
    const scene = gd._fullLayout && gd._fullLayout.scene;
    let ink = {error: "not measured"};
    try { ink = await __edgeInk(gd); } catch (e) { ink = {error: String(e)}; }
    plots.push({id: gd.id, box: [box.left, box.top, box.right, box.bottom],
                parts: parts.map(r => [r.left, r.top, r.right, r.bottom]),
                layoutWidth: gd._fullLayout ? gd._fullLayout.width : null, ink: ink,
                titles: scene ? ["xaxis", "yaxis", "zaxis"].map(a => scene[a].title.text) : []});
  }
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({errors: __errors, view: view, plots: plots,
                                    scrollWidth: document.documentElement.scrollWidth});
  document.body.appendChild(out);
}, 1500));
</script>"""


def _measure(page, width: int, tmp_path) -> dict:
    """Load ``page`` (HTML text) with the probe at ``width`` px; the probe's findings."""
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(page.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + PROBE, 1))
    profile = tmp_path / f"profile-{width}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--enable-unsafe-swiftshader", f"--user-data-dir={profile}",
               f"--window-size={width},2000", "--virtual-time-budget=15000", "--dump-dom",
               probed.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not report (chromium exit {done.returncode}): {done.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


def _problems(result: dict) -> list[str]:
    """Errors, and plotly plots whose drawn parts leave their container or the window."""
    problems = list(result["errors"])
    if result["scrollWidth"] > result["view"] + 1:
        problems.append(f"page scrolls sideways: {result['scrollWidth']} > {result['view']} px")
    for plot in result["plots"]:
        left, top, right, bottom = plot["box"]
        if right > result["view"] + 1:
            problems.append(f"{plot['id']}: container ends at {right} > {result['view']} px")
        if not plot["parts"]:
            problems.append(f"{plot['id']}: nothing drawn")
        for l, t, r, b in plot["parts"]:
            if l < left - 1 or t < top - 1 or r > right + 1 or b > bottom + 1:
                problems.append(f"{plot['id']}: part {[l, t, r, b]} outside {plot['box']}")
        if plot["layoutWidth"] is None or plot["layoutWidth"] > right - left + 1:
            problems.append(f"{plot['id']}: layout width {plot['layoutWidth']} > box "
                            f"{right - left}")
        ink = plot["ink"]
        if "error" in ink or any(ink.values()):
            problems.append(f"{plot['id']}: cut off at its edge (dark pixels on the frame: {ink})")
        if not all(plot["titles"]):
            problems.append(f"{plot['id']}: an axis has no title {plot['titles']}")
    return problems


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    figures = [
        FigureSpec("fig2", "Fig. 2", "surface caption", "surface", {"surface": "surfaces/p.zarr"}),
        FigureSpec("fig3", "Fig. 3", "affine caption", "surface", {"surface": "surfaces/a.zarr"}),
        FigureSpec("fig10", "Fig. 10", "lines caption", "lines",
                   {"series": [{"label": "sgd (seed 0)", "surface": "surfaces/l.zarr"}]}),
    ]
    first = recipe(out, "optimizers", "4.1", figures)
    plane_store(first.root / "surfaces/p.zarr", spoil={(3, 3): np.inf})
    plane_store(first.root / "surfaces/a.zarr", kind="affine")
    line_store(first.root / "surfaces/l.zarr")
    # a claim with long unbreakable values: the table must not push the page sideways
    Claim.save_all([Claim(1, "methods reach different minima " * 3, "barrier/sgd|adam",
                          ",".join(f"barrier/m{i}|m{i + 1}={i / 7:.6f}" for i in range(12)),
                          True, "optimizers", reason="x" * 150)], out / "claims.json")
    return write_report(out).read_text()


@pytest.mark.parametrize("width", [900, 1400])
def test_no_console_error_and_no_cropped_3d_plot(page, width, tmp_path):
    result = _measure(page, width, tmp_path)
    assert len(result["plots"]) == 2  # both 3-D plots were drawn by plotly
    assert _problems(result) == []
    # the plots use the width they are given (autosize), not a fixed one
    for plot in result["plots"]:
        left, _, right, _ = plot["box"]
        assert plot["layoutWidth"] >= (right - left) - 40


def test_the_probe_sees_errors_and_overflow(tmp_path):
    # a page with a script error and a plot wider than the window: both must be reported
    from lossurf.plots import plotly_bundle

    page = ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f"<script>{plotly_bundle()}</script></head><body>"
            '<div class="plotly-holder" style="width:600px"><div id="wide"></div></div><script>'
            'Plotly.newPlot("wide", [{type: "surface", z: [[1, 2], [3, 4]]}], {width: 1600, '
            'height: 400});</script>'
            '<div class="plotly-holder" style="width:600px"><div id="tight"></div></div><script>'
            'Plotly.newPlot("tight", [{type: "surface", z: [[1, 2], [3, 4]]}], {width: 500, '
            'height: 300, margin: {l: 0, r: 0, t: 0, b: 0}, scene: {camera: {eye: '
            '{x: 0.6, y: 0.6, z: 0.4}}}});</script>'
            "<script>undefinedFunction();</script></body></html>")
    problems = _problems(_measure(page, 900, tmp_path))
    assert any(p.startswith("tight: cut off at its edge") for p in problems), problems
    assert any("undefinedFunction" in p for p in problems), problems
    assert any("outside" in p for p in problems), problems
    assert any("scrolls sideways" in p or "container ends" in p or "layout width" in p
               for p in problems), problems
