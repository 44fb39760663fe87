"""Section 4.4: the optimizers and restarts analyses with and without batch norm (Table 2,
Fig. 8): the spread of test accuracy across seeds and the shape of the minimum-to-minimum
lines, side by side."""

from __future__ import annotations

import pandas as pd

from lossurf.experiments.common import Context, run_label
from lossurf.experiments.restarts import profiles
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "With and without batch normalization", "4.4"


def run(ctx: Context) -> RecipeResult:
    """Train ``preset.batchnorm.methods`` with and without batch norm; compare their lines."""
    from lossurf.errors import LossurfError

    settings = ctx.preset.batchnorm
    if settings is None:
        raise LossurfError(f"preset {ctx.preset.name!r} has no batchnorm: section "
                           "(its model has no batch norm); add one or run another recipe")
    result = ctx.result(TITLE, SECTION)
    rows, series, curves = [], [], []
    for bn in (True, False):
        key = "bn" if bn else "no-bn"
        exp, rel = ctx.train(ctx.config(key, batch_norm=bn), settings.methods)
        result.experiments[key] = rel
        found = profiles(ctx, exp, settings.methods, settings.pairs, prefix=f"{key}-")
        result.measurements[key] = found
        for m in settings.methods:
            for seed in ctx.preset.seeds:
                run = run_label(exp, m, seed)
                last = exp.metrics(run).iloc[-1]
                rows.append({"batch_norm": bn, "method": m, "seed": seed,
                             "train_accuracy": float(last["train_accuracy"]),
                             "test_accuracy": float(last["test_accuracy"]),
                             "status": exp.status(run)["status"]})
                curves.append({"label": f"{m} (seed {seed})", "experiment": key, "run": run,
                               "group": f"{m}, {key}"})
        series += [{"label": f"{e['a']} -> {e['b']} (seed {e['seed']})", "surface": e["surface"],
                    "group": f"{e['a']}|{e['b']}, {key}"} for e in found["pairs"]]
    result.tables["accuracy"] = ctx.table("accuracy", pd.DataFrame(rows))
    result.figures += [
        FigureSpec("table2", "Table 2: test accuracy with and without batch norm",
                   "Final test accuracy per method and seed, with (True) and without (False) "
                   "batch normalization.", "bars",
                   {"table": result.tables["accuracy"], "label": "method",
                    "value": "test_accuracy", "group": "batch_norm"}),
        FigureSpec("fig8", "Fig. 8: between minima, with and without batch norm",
                   "Loss along the line between the minima of two methods for each seed; "
                   "panels pair the batch-norm and no-batch-norm networks.", "lines",
                   {"series": series, "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("fig8-curves", "Accuracy with and without batch norm",
                   "Test accuracy per epoch.", "curves",
                   {"series": curves, "columns": ["test_accuracy"], "x": "epoch"}),
    ]
    return result
