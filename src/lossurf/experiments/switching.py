"""Section 4.3 and A.6: switch from method A to B after 25, 50 or 75 % of the epochs.

Fig. 7 (a-c): accuracy curves, distance from initialization per epoch, and the loss between
each switched run's minimum and the minima of the pure runs A and B (first seed). Fig. 7(d)
and the panels of Figs. 12-15 are ``switching.variants`` of the preset: the same three
columns for switches whose second method runs at another learning rate (``fig13b``: SGD at
0.05 and ADAM at 0.0005 after the switch). The epoch each switch happened at is
:func:`lossurf.train.switch_epoch` and is stated in every run's metrics (``switch_epoch``).
"""

from __future__ import annotations

import pandas as pd

from lossurf.experiments.common import Context, run_label, switch_name
from lossurf.experiments.result import FigureSpec, RecipeResult
from lossurf.train import switch_epoch

TITLE, SECTION = "Switching optimizers during training", "4.3"


def run(ctx: Context) -> RecipeResult:
    """Train the switched runs of ``preset.switching`` (first seed) and compare their minima."""
    p, settings = ctx.preset, ctx.preset.switching
    result = ctx.result(TITLE, SECTION)
    seed = p.seeds[0]
    pure = sorted({m for v in [settings, *settings.variants] for pair in v.pairs for m in pair})
    switched = [switch_name(*item) for item in ctx.switches()]
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
            at = switch_epoch(f, p.epochs)
            curves.append({"label": f"{a} -> {b} after epoch {at} ({round(f * 100)}%)",
                           "experiment": "main", "run": name(run_name), "group": group})
            if not all(ctx.finished(exp, name(r)) for r in (run_name, a, b)):
                continue
            row = {"a": a, "b": b, "fraction": f, "switch_epoch": at, "run": name(run_name),
                   "pure_a": name(a), "pure_b": name(b)}
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
                   "Train and test accuracy per epoch of the pure runs and of the runs that switch from A "
                   "to B after 25, 50 or 75 % of the epochs.", "curves",
                   {"series": curves, "columns": ["train_accuracy", "test_accuracy"], "x": "epoch"}),
        FigureSpec("fig7-distance", "Fig. 7: distance from initialization when switching",
                   "||theta_t - theta_0|| per epoch of the pure and the switched runs (the "
                   "paper: it changes after a switch, and falls after Adam to SGD; claim 6).",
                   "curves", {"series": curves, "columns": ["distance_from_init"], "x": "epoch"}),
        FigureSpec("fig7-lines", "Fig. 7: between switched and pure minima",
                   "Loss along the line from each switched run's minimum (alpha = 0) to the "
                   "minimum of the pure run (alpha = 1).", "lines",
                   {"series": lines, "x": "alpha", "var": "loss", "panels_by": "group"}),
    ]
    result.measurements["variants"] = [_variant(ctx, exp, v, seed, result)
                                       for v in settings.variants]
    return result


def _variant(ctx: Context, exp, variant, seed: int, result: RecipeResult) -> dict:
    """One learning-rate panel (Fig. 7(d), 12-15): its curves and its lines between minima."""
    p = ctx.preset
    name = lambda r: run_label(exp, r, seed)  # noqa: E731
    fractions = variant.fractions or p.switching.fractions
    curves, lines, runs = [], [], []
    for a, b in variant.pairs:
        lr = ctx.variant_lr(variant, b)
        after = ctx.lrs[b] if lr is None else lr
        group = f"{a} -> {b} ({b} at {after:g})"
        curves.append({"label": f"{a} only", "experiment": "main", "run": name(a),
                       "group": group})
        for f in fractions:
            run_name = switch_name(a, b, f, lr)
            at = switch_epoch(f, p.epochs)
            curves.append({"label": f"{a} -> {b} after epoch {at} ({round(f * 100)}%)",
                           "experiment": "main", "run": name(run_name), "group": group})
            runs.append({"a": a, "b": b, "fraction": f, "switch_epoch": at, "lr_after": after,
                         "run": name(run_name), "lines": {}})
            if not all(ctx.finished(exp, name(r)) for r in (run_name, a, b)):
                continue
            for target in (a, b):
                # the key names the run, so a run shared with Fig. 7 reuses its stored line
                _, line = ctx.surface("line", f"switch-{run_name}-to-{target}", exp,
                                      [name(run_name), name(target)],
                                      steps=p.surface.line_steps)
                runs[-1]["lines"][target] = line
                lines.append({"label": f"{round(f * 100)}% -> {target} only", "surface": line,
                              "group": f"{a} -> {b} vs {target}"})
    title = variant.title or f"{variant.key}: switching at other learning rates"
    lrs = ", ".join(f"{m} {lr:g}" for m, lr in variant.lrs.items()) or "unchanged"
    result.figures += [
        FigureSpec(f"{variant.key}-curves", f"{title} (accuracy and distance)",
                   "Training and test accuracy and the distance from the initialization per "
                   f"epoch; learning rates after the switch: {lrs}.", "curves",
                   {"series": curves, "x": "epoch",
                    "columns": ["train_accuracy", "test_accuracy", "distance_from_init"]}),
        FigureSpec(variant.key, f"{title} (between minima)",
                   "Loss along the line from each switched run's minimum (alpha = 0) to the "
                   f"minimum of a pure run (alpha = 1); learning rates after the switch: {lrs}.",
                   "lines", {"series": lines, "x": "alpha", "var": "loss", "panels_by": "group"}),
    ]
    return {"key": variant.key, "lrs": dict(variant.lrs), "runs": runs}
