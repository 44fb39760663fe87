"""Section 4.3 and A.6: switch from method A to B after 25, 50 or 75 % of the epochs.

Fig. 7 / 12-15: accuracy curves, distance from initialization per epoch, and the loss between
each switched run's minimum and the minima of the pure runs A and B (first seed).
"""

from __future__ import annotations

import pandas as pd

from lossurf.experiments.common import Context, run_label, switch_name
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "Switching optimizers during training", "4.3"


def run(ctx: Context) -> RecipeResult:
    """Train the switched runs of ``preset.switching`` (first seed) and compare their minima."""
    p, settings = ctx.preset, ctx.preset.switching
    result = ctx.result(TITLE, SECTION)
    seed = p.seeds[0]
    pure = sorted({m for pair in settings.pairs for m in pair})
    switched = [switch_name(a, b, f) for a, b in settings.pairs for f in settings.fractions]
    exp, rel = ctx.train(ctx.config("main"), pure + switched, seeds=[seed])
    result.experiments["main"] = rel
    name = lambda r: run_label(exp, r, seed)  # noqa: E731
    rows, curves, lines = [], [], []
    for a, b in settings.pairs:
        group = f"{a} -> {b}"
        curves += [{"label": f"{m} only", "experiment": "main", "run": name(m), "group": group}
                   for m in (a, b)]
        for f in settings.fractions:
            run_name = switch_name(a, b, f)
            curves.append({"label": f"{a} -> {b} at {round(f * 100)}%", "experiment": "main",
                           "run": name(run_name), "group": group})
            if not all(ctx.finished(exp, name(r)) for r in (run_name, a, b)):
                continue
            row = {"a": a, "b": b, "fraction": f, "run": name(run_name), "pure_a": name(a),
                   "pure_b": name(b)}
            for target, which in ((a, "a"), (b, "b")):
                _, row[f"line_{which}"] = ctx.surface(
                    "line", f"switch-{run_name}-to-{target}", exp, [name(run_name), name(target)],
                    steps=p.surface.line_steps)
                lines.append({"label": f"{round(f * 100)}% -> {target} only",
                              "surface": row[f"line_{which}"], "group": f"{group} vs {target}"})
            row.update(ctx.functional_distance(exp, name(run_name), name(a)))
            rows.append(row)
    result.measurements["switches"] = rows
    result.measurements["epochs"] = p.epochs
    result.tables["switches"] = ctx.table("switches", pd.DataFrame(rows))
    result.figures += [
        FigureSpec("fig7-accuracy", "Fig. 7: accuracy when switching methods",
                   "Test accuracy per epoch of the pure runs and of the runs that switch from A "
                   "to B after 25, 50 or 75 % of the epochs.", "curves",
                   {"series": curves, "columns": ["train_accuracy", "test_accuracy"], "x": "epoch"}),
        FigureSpec("fig7-distance", "Fig. 7: distance from initialization when switching",
                   "||theta_t - theta_0|| per epoch: the switch changes where training goes.",
                   "curves", {"series": curves, "columns": ["distance_from_init"], "x": "epoch"}),
        FigureSpec("fig12", "Figs. 12-15: between switched and pure minima",
                   "Loss along the line from each switched run's minimum (alpha = 0) to the "
                   "minimum of the pure run (alpha = 1).", "lines",
                   {"series": lines, "x": "alpha", "var": "loss", "panels_by": "group"}),
    ]
    return result
