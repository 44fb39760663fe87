"""Section 4.2: every method from several initializations.

Fig. 5 (loss from each initialization to its minimum, and between the minima of selected
pairs per seed), Fig. 6 (basin profiles in absolute distance, past the initialization) and
Fig. 10 (the line from initialization to minimum extended to alpha = 2: its own surfaces,
so it is not Fig. 5(a) redrawn). The measurements
list every profile's surface by method and seed; :mod:`lossurf.analysis.claims` turns them
into basin widths (claim 5), profile similarity (claim 4) and the rise past alpha = 1 (10).

A basin's width must not include the grid's end: moving away from the initialization
(lambda < 0) the loss often keeps falling for a long way, so the default grid's end at
lambda = -D/2 would cut the basin there and its "width" would measure how far the run moved
(D). :func:`widen_basin` therefore extends each basin profile further away, doubling the
reach, until the loss crosses the basin's level or the reach is ``MAX_REACH`` times D; a basin
still cut there is reported as a lower bound, never decided on.
"""

from __future__ import annotations

import numpy as np

from lossurf.analysis.basins import BASIN_REL, basin_extent
from lossurf.experiments.common import Context, run_label
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "Different optimizers from several initializations", "4.2"

#: How far past the minimum, away from the initialization, a basin profile may be extended
#: (in units of D, the minimum's distance from its initialization).
MAX_REACH = 8.0


def basin_level(lam: np.ndarray, loss: np.ndarray, init_distance: float) -> float:
    """The loss rise that bounds a basin: ``BASIN_REL * (L(init) - L(minimum))`` (>= 0)."""
    i0 = int(np.argmin(np.abs(lam)))
    iD = int(np.argmin(np.abs(lam - init_distance)))
    return max(BASIN_REL * float(loss[iD] - loss[i0]), 0.0)


def profile_of(datasets) -> tuple[np.ndarray, np.ndarray]:
    """One basin profile (lambda, loss) from its surface and its extensions, sorted."""
    lam = np.concatenate([np.asarray(ds["lambda"].values, float) for ds in datasets])
    loss = np.concatenate([np.asarray(ds["loss"].values, float) for ds in datasets])
    order = np.argsort(lam)
    return lam[order], loss[order]


def widen_basin(ctx: Context, exp, run: str, init: str, key: str, first) -> list[str]:
    """Extend a basin profile away from the initialization until the basin ends on the grid.

    Each extension doubles the reach (lambda from ``low`` to ``2 low``) with the preset's
    basin steps, up to ``-MAX_REACH * D``. Returns the extensions' surface paths.
    """
    d = float(first.attrs["geometry_init_distance"])
    datasets, paths = [first], []
    threshold = basin_level(*profile_of(datasets), d)
    while True:
        lam, loss = profile_of(datasets)
        low = float(lam[0])
        basin = basin_extent(lam, loss, threshold, center=0.0)
        if not basin.truncated_left or low <= -MAX_REACH * d * (1 - 1e-9) or low >= 0:
            return paths
        new_low = max(2.0 * low, -MAX_REACH * d)
        steps = ctx.preset.surface.basin_steps
        distances = np.linspace(new_low, low, steps)[:-1]  # low itself is already evaluated
        ds, rel = ctx.surface("basin", f"{key}-reach{len(paths) + 1}", exp, [run, init],
                              distances=distances)
        datasets.append(ds)
        paths.append(rel)


def profiles(ctx: Context, exp, methods: list[str], pairs, prefix: str = "") -> dict:
    """Compute init->minimum lines (alpha in [0, 1], Fig. 5(a)), the same lines extended to
    alpha = extend_to (Fig. 10), basins (widened until they end on the grid, see
    :func:`widen_basin`) and minimum-to-minimum lines of ``methods`` for every seed; returns
    ``{"init_lines", "extended", "basins", "pairs"}`` lists."""
    p = ctx.preset
    out = {"init_lines": [], "extended": [], "basins": [], "pairs": []}
    for seed in p.seeds:
        for m in methods:
            run = run_label(exp, m, seed)
            if not ctx.finished(exp, run):
                continue
            init = exp.init_label(seed)
            _, line = ctx.surface("line", f"{prefix}init-{m}-s{seed}", exp, [init, run],
                                  steps=p.surface.line_steps)
            out["init_lines"].append({"method": m, "seed": seed, "surface": line})
            _, ext = ctx.surface("line", f"{prefix}extended-{m}-s{seed}", exp, [init, run],
                                 range=(0.0, p.surface.extend_to), steps=p.surface.extended_steps)
            out["extended"].append({"method": m, "seed": seed, "surface": ext})
            first, bas = ctx.surface("basin", f"{prefix}basin-{m}-s{seed}", exp, [run, init],
                                     steps=p.surface.basin_steps)
            wider = widen_basin(ctx, exp, run, init, f"{prefix}basin-{m}-s{seed}", first)
            out["basins"].append({"method": m, "seed": seed, "surface": bas,
                                  "extensions": wider})
        for a, b in pairs:
            ra, rb = run_label(exp, a, seed), run_label(exp, b, seed)
            if ctx.finished(exp, ra) and ctx.finished(exp, rb):
                _, rel = ctx.surface("line", f"{prefix}pair-{a}-{b}-s{seed}", exp, [ra, rb],
                                     steps=p.surface.line_steps)
                out["pairs"].append({"a": a, "b": b, "seed": seed, "surface": rel})
    return out


def run(ctx: Context) -> RecipeResult:
    """Train the methods of ``preset.restarts`` for every seed and compute their profiles."""
    settings = ctx.preset.restarts
    result = ctx.result(TITLE, SECTION)
    exp, rel = ctx.train(ctx.config("main"), settings.methods)
    result.experiments["main"] = rel
    found = profiles(ctx, exp, settings.methods, settings.pairs)
    result.measurements.update(found)
    result.measurements["extend_to"] = ctx.preset.surface.extend_to
    line = lambda e: {"label": f"{e['method']} (seed {e['seed']})", "surface": e["surface"],  # noqa: E731
                      "group": e["method"]}
    result.figures += [
        FigureSpec("fig5a", "Fig. 5: from initialization to minimum",
                   "Loss along theta(alpha) from each initialization (alpha = 0) to the minimum "
                   "a method reached (alpha = 1), one panel per method, one line per seed.",
                   "lines", {"series": [line(e) for e in found["init_lines"]], "x": "alpha",
                             "var": "loss", "panels_by": "group"}),
        FigureSpec("fig5b", "Fig. 5: between the minima of two methods",
                   "Loss along the line from method A's minimum (alpha = 0) to method B's "
                   "(alpha = 1), for each initialization.",
                   "lines", {"series": [{"label": f"{e['a']} -> {e['b']} (seed {e['seed']})",
                                         "surface": e["surface"], "group": f"{e['a']}|{e['b']}"}
                                        for e in found["pairs"]],
                             "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("fig6", "Fig. 6: basins in absolute distance",
                   "Loss from each minimum (lambda = 0) toward and past its initialization, in "
                   "weight-space distance (eq. 1).",
                   "lines", {"series": [line(e) for e in found["basins"]], "x": "lambda",
                             "var": "loss", "panels_by": "group"}),
        FigureSpec("fig10", "Fig. 10: past the minimum",
                   "The line from initialization to minimum extended to alpha = "
                   f"{ctx.preset.surface.extend_to:g} (eq. 2); the paper: the loss rises past "
                   "the minimum (claim 10 tests it).",
                   "lines", {"series": [line(e) for e in found["extended"]], "x": "alpha",
                             "var": "loss", "panels_by": "group"}),
    ]
    return result
