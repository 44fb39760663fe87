"""Section 4.4: the optimizers and restarts analyses with and without batch norm.

Table 2 (the loss surfaces with and without batch norm: for each pair of methods the
barycentric surface over the initialization and both minima, and the minimum-to-minimum
lines side by side; plus the test accuracies), Fig. 8 (without batch norm: initialization to
minimum on top, minimum to minimum below, one line per initialization)."""

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
    rows, series, curves, planes = [], [], [], []
    first = ctx.preset.seeds[0]
    fig8a: list[dict] = []
    fig8b: list[dict] = []
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
        for a, b in settings.pairs:
            ra, rb = run_label(exp, a, first), run_label(exp, b, first)
            if not (ctx.finished(exp, ra) and ctx.finished(exp, rb)):
                continue
            corners = [exp.init_label(first), ra, rb]
            _, plane = ctx.surface("barycentric", f"table2-{key}-{a}-{b}", exp, corners,
                                   steps=ctx.preset.surface.plane_steps)
            planes.append(FigureSpec(
                f"table2-{key}-{a}-{b}",
                f"Table 2: {a} and {b}, {'with' if bn else 'without'} batch norm",
                f"Loss over the barycentric plane of the initialization (seed {first}) and the "
                f"minima of {a} and {b}, {'with' if bn else 'without'} batch normalization.",
                "surface", {"surface": plane, "var": "loss", "corner_labels": corners}))
        if not bn:  # Fig. 8: one column (panel) per initialization
            fig8a = [{"label": e["method"], "surface": e["surface"], "group": f"seed {e['seed']}"}
                     for e in found["init_lines"]]
            fig8b = [{"label": f"{e['a']} -> {e['b']}", "surface": e["surface"],
                      "group": f"seed {e['seed']}"} for e in found["pairs"]]
    result.tables["accuracy"] = ctx.table("accuracy", pd.DataFrame(rows))
    # Table 2 as the paper draws it: surfaces, with batch norm next to without.
    planes.sort(key=lambda f: (f.key.replace("-no-bn", "").replace("-bn", ""), "no-bn" in f.key))
    result.figures += planes
    result.figures += [
        FigureSpec("table2-lines", "Table 2: between minima, with and without batch norm",
                   "Loss along the line between the minima of two methods for each seed; "
                   "panels pair the batch-norm and no-batch-norm networks.", "lines",
                   {"series": series, "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("table2-accuracy", "Table 2: test accuracy with and without batch norm",
                   "Final test accuracy per method and seed, with (True) and without (False) "
                   "batch normalization.", "bars",
                   {"table": result.tables["accuracy"], "label": "method",
                    "value": "test_accuracy", "group": "batch_norm"}),
        FigureSpec("fig8a", "Fig. 8 (top): without batch norm, initialization to minimum",
                   "Loss along the line from the initialization (alpha = 0) to each method's "
                   "minimum (alpha = 1), without batch normalization; one panel per "
                   "initialization.", "lines",
                   {"series": fig8a, "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("fig8b", "Fig. 8 (bottom): without batch norm, minimum to minimum",
                   "Loss along the line between the minima of two methods, without batch "
                   "normalization; one panel per initialization.", "lines",
                   {"series": fig8b, "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("fig8-curves", "Accuracy with and without batch norm",
                   "Test accuracy per epoch.", "curves",
                   {"series": curves, "columns": ["test_accuracy"], "x": "epoch"}),
    ]
    return result
