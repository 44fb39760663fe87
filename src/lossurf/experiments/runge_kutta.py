"""Appendix A.4: second-order Runge-Kutta against SGD and Adam (Fig. 9), compared at equal
epochs and at equal gradient evaluations (an RK2 step costs two), with the paper's control
SGD x2 (``sgd-2lr``: SGD at the doubled learning rate the RK methods use). The summary table
flags each run's outcome (trained, did not train, diverged). Table 3 (the coefficients of the
second-order methods) is written from the tableaus the optimizers actually use."""

from __future__ import annotations

import pandas as pd

from lossurf.analysis.training import chance_accuracy, training_outcome
from lossurf.experiments.common import Context, run_label
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "Runge-Kutta integrators", "A.4"


def table3() -> pd.DataFrame:
    """Table 3: the (a1, a2, q1) of each second-order Runge-Kutta method, from the tableaus
    :mod:`lossurf.optim.runge_kutta` trains with (not copied from the paper)."""
    from lossurf.optim.runge_kutta import TABLEAUS

    # long format (one coefficient a row), as the ``matrix`` figure kind reads it
    return pd.DataFrame([{"method": name, "coefficient": c, "value": v}
                         for name, t in TABLEAUS.items() if name != "euler"
                         for c, v in zip(("a1", "a2", "q1"), t.as_tuple())])


def run(ctx: Context) -> RecipeResult:
    """Train ``preset.runge_kutta.methods`` (first seed) and tabulate their curves."""
    p, settings = ctx.preset, ctx.preset.runge_kutta
    result = ctx.result(TITLE, SECTION)
    seed = p.seeds[0]
    exp, rel = ctx.train(ctx.config("main"), settings.methods, seeds=[seed])
    result.experiments["main"] = rel
    series = [{"label": m, "experiment": "main", "run": run_label(exp, m, seed)}
              for m in settings.methods]
    rows = []
    chance = chance_accuracy(exp.config.model.options)
    for m in settings.methods:
        frame = exp.metrics(run_label(exp, m, seed))
        status = exp.status(run_label(exp, m, seed))["status"]
        outcome = training_outcome(status, frame, chance)
        # A run that never trained (accuracy at chance, loss growing) or diverged is flagged
        # here, so Fig. 9's comparisons are read knowing it.
        rows.append({"method": m, "status": status, "outcome": outcome.outcome,
                     "outcome_reason": outcome.reason,
                     "initial_train_loss": outcome.initial_train_loss,
                     "final_train_loss": outcome.final_train_loss,
                     "final_train_accuracy": float(frame["train_accuracy"].iloc[-1]),
                     "mean_train_accuracy": float(frame["train_accuracy"].iloc[1:].mean()),
                     "gradient_evaluations": int(frame["gradient_evaluations"].iloc[-1])})
    result.measurements["runs"] = {m: s["run"] for m, s in zip(settings.methods, series)}
    result.tables["summary"] = ctx.table("summary", pd.DataFrame(rows))
    result.tables["table3"] = ctx.table("table3", table3())
    result.figures += [
        FigureSpec("table3", "Table 3: coefficients of the second-order Runge-Kutta methods",
                   "a1, a2 and q1 of eqs. 18-20 for each method, as the optimizers use them.",
                   "matrix", {"table": result.tables["table3"], "value": "value",
                              "row": "method", "col": "coefficient"}),
        FigureSpec("fig9-epochs", "Fig. 9: Runge-Kutta at equal epochs",
                   "Training accuracy per epoch.", "curves",
                   {"series": series, "columns": ["train_accuracy"], "x": "epoch"}),
        FigureSpec("fig9-evaluations", "Fig. 9: Runge-Kutta at equal gradient evaluations",
                   "Training accuracy against the number of gradient evaluations (an RK2 "
                   "step costs two).", "curves",
                   {"series": series, "columns": ["train_accuracy"], "x": "gradient_evaluations"}),
    ]
    return result
