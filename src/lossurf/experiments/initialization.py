"""Appendix A.5: SGD from the exotic initializations N(-10, 0.01) and N(-1, 1), with and
without batch norm (Fig. 11): the line from each initialization to where training ended, how
far training moved, and the loss on a short line around the initialization (a plateau is
flat there; a bad minimum rises)."""

from __future__ import annotations

import pandas as pd

from lossurf import models
from lossurf.analysis.training import chance_accuracy, training_outcome
from lossurf.experiments.common import Context, run_label
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "Exotic initializations", "A.5"

#: How far toward (and away from) a default initialization the plateau probe looks, as a
#: fraction of the way.
PROBE_RANGE = 0.05
#: Probe directions: toward this many default initializations (seeds s, s+1, ...), both
#: signs. A bad minimum rises along every one; a plateau stays flat along every one.
PROBE_DIRECTIONS = 3


def run(ctx: Context) -> RecipeResult:
    """Train ``preset.init.method`` from each exotic initialization, with and without BN."""
    p, settings = ctx.preset, ctx.preset.init
    result = ctx.result(TITLE, SECTION)
    seed = p.seeds[0]
    rows, lines, curves, probes = [], [], [], []
    for init in settings.inits:
        tag = f"N({init.mean:g}, {init.std:g})"
        for bn in (True, False):
            key = f"init{init.mean:g}_{init.std:g}-{'bn' if bn else 'no-bn'}"
            config = ctx.config(key, batch_norm=bn, init=init, methods=[settings.method],
                                seeds=[seed], epochs=settings.epochs)
            exp, rel = ctx.train(config, [settings.method])
            result.experiments[key] = rel
            run_name = run_label(exp, settings.method, seed)
            label = f"{tag}, {'with' if bn else 'without'} BN"
            curves.append({"label": label, "experiment": key, "run": run_name, "group": tag})
            metrics = exp.metrics(run_name)
            row = {"init": tag, "mean": init.mean, "std": init.std, "batch_norm": bn,
                   "experiment": key, "run": run_name, "status": exp.status(run_name)["status"],
                   "initial_train_loss": float(metrics["train_loss"].iloc[0]),
                   "final_train_loss": float(metrics["train_loss"].iloc[-1]),
                   "final_train_accuracy": float(metrics["train_accuracy"].iloc[-1]),
                   "distance_moved": float(metrics["distance_from_init"].iloc[-1])}
            outcome = training_outcome(row["status"], metrics,
                                       chance_accuracy(exp.config.model.options))
            row["outcome"], row["outcome_reason"] = outcome.outcome, outcome.reason
            # The line ends where training ended: the final weights, or for a run that
            # diverged its last saved epoch (never the init itself: a line from the init to
            # itself is no line); a run with no saved epoch gets none.
            end = run_name if row["status"] == "finished" else None
            if end is None:
                saved = [e for e in exp.layout.epochs_saved(run_name) if e > 0]
                end = f"{run_name}:epoch={saved[-1]}" if saved else None
            row["line_end"] = end
            row["line"] = None
            if end is not None:
                _, row["line"] = ctx.surface("line", f"{key}-line", exp,
                                             [exp.init_label(seed), end],
                                             steps=p.surface.line_steps)
                lines.append({"label": label if end == run_name else f"{label} ({end})",
                              "surface": row["line"], "group": tag})
            # The plateau probe: short lines through the exotic init, toward and away from
            # default initializations (one direction each).
            row["probes"] = []
            for k in range(PROBE_DIRECTIONS):
                default = models.build(exp.config.model.model_copy(update={"init": type(init)()}),
                                       seed=seed + k).state_dict()
                _, probe = ctx.surface(
                    "line", f"{key}-probe{k}", exp,
                    [exp.init_label(seed), (f"default-init{k}", default)],
                    range=(-PROBE_RANGE, PROBE_RANGE), steps=p.surface.line_steps)
                row["probes"].append(probe)
                # a panel per run: with BN the loss can be ten times higher, which would
                # flatten the runs without BN the claim is about
                probes.append({"label": f"direction {k + 1}", "surface": probe,
                               "group": label})
            row["probe"] = row["probes"][0]  # results written before several directions
            rows.append(row)
    result.measurements["runs"] = rows
    result.measurements["num_classes"] = int(ctx.dataset(config).num_classes)
    result.tables["init"] = ctx.table("init", pd.DataFrame(rows))
    result.figures += [
        FigureSpec("fig11a", "Fig. 11(a): from exotic initializations",
                   "Loss along the line from each exotic initialization (alpha = 0) to where "
                   "training ended (alpha = 1), with and without batch norm.", "lines",
                   {"series": lines, "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("fig11b", "Fig. 11(b): around the exotic initializations",
                   "The plateau probe: loss on short lines through each exotic "
                   f"initialization (alpha = 0), toward and away from {PROBE_DIRECTIONS} default "
                   f"initializations (alpha = +-{PROBE_RANGE:g} of the way). A plateau stays "
                   "flat along every direction; a bad minimum would rise along every one.",
                   "lines",
                   {"series": probes, "x": "alpha", "var": "loss", "panels_by": "group"}),
        FigureSpec("fig11-curves", "Training from exotic initializations",
                   "Training accuracy and distance from the initialization per epoch.", "curves",
                   {"series": curves, "columns": ["train_accuracy", "distance_from_init"],
                    "x": "epoch"}),
    ]
    return result
