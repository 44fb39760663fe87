"""Section 4.1: every method from one initialization and one minibatch order.

Fig. 1 (a learning curve), Table 1 (barycentric surfaces over init, A, B and functional
distance along A->B), Fig. 2 (bilinear surface between two initializations and their SGD
minima, see :func:`fig2_corners`), Fig. 3 (bilinear surface between four methods' minima),
Fig. 4 (accuracy curves) and the pairwise distance matrices.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from lossurf.analysis.basins import barrier
from lossurf.experiments.common import Context, run_label, values
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "Different optimizers from one initialization", "4.1"


def fig2_corners(init0: str, min0: str, init1: str, min1: str) -> list[str]:
    """Fig. 2's corners in the order of eqs. 3-5 (theta1..theta4).

    The bilinear plane puts theta1 at (alpha, beta) = (1, 1), theta2 at (0, 1), theta3 at
    (1, 0) and theta4 at (0, 0); its edges join theta1-theta2, theta3-theta4 (alpha varies)
    and theta1-theta3, theta2-theta4 (beta varies). The paper's figure has each
    initialization joined to its own minimum by an edge and the two minima joined by an
    edge, so: theta1 = init 0, theta2 = its minimum, theta3 = init 1, theta4 = its minimum.
    The minimum-to-minimum path is then the edge alpha = 0, and init-to-init the edge
    alpha = 1; no training path runs along a diagonal.
    """
    return [init0, min0, init1, min1]


def run(ctx: Context) -> RecipeResult:
    """Train the methods of ``preset.optimizers`` and compute the section's surfaces."""
    p, settings = ctx.preset, ctx.preset.optimizers
    result = ctx.result(TITLE, SECTION)
    exp, rel = ctx.train(ctx.config("main"), settings.methods)
    result.experiments["main"] = rel
    s0, s1 = p.seeds[0], p.seeds[1]
    name = lambda m, s=s0: run_label(exp, m, s)  # noqa: E731
    ok = [m for m in settings.methods if ctx.finished(exp, name(m))]
    result.measurements["diverged"] = [m for m in settings.methods if m not in ok]

    # Table 1: lower triangle (barycentric over init, A, B), upper (fdist along A -> B).
    surfaces, distances, rows = {}, {}, []
    for a, b in settings.pairs:
        if a not in ok or b not in ok:
            continue
        pair = f"{a}|{b}"
        _, surfaces[pair] = ctx.surface("barycentric", f"table1-{a}-{b}", exp,
                                        [exp.init_label(s0), name(a), name(b)],
                                        steps=p.surface.plane_steps)
        _, distances[pair] = ctx.surface("distance", f"table1-dist-{a}-{b}", exp,
                                            [name(a), name(b)], split="test",
                                            steps=p.surface.line_steps)
        line, line_rel = ctx.surface("line", f"line-{a}-{b}", exp, [name(a), name(b)],
                                     steps=p.surface.line_steps)
        # the two minima as trained (their own BN statistics), on the line's examples
        ends = ctx.functional_distance(exp, name(a), name(b))
        rows.append({
            "pair": pair, "barrier": barrier(values(line)), "line": line_rel,
            "distance_line": distances[pair], "fdist": ends["fdist"],
            "disagreement": ends["disagreement"],
            "error_a": 1.0 - ends["accuracy_a"], "error_b": 1.0 - ends["accuracy_b"],
        })
        result.measurements[f"barrier/{pair}"] = rows[-1]["barrier"]
    result.tables["pairs"] = ctx.table("pairs", pd.DataFrame(rows))
    result.figures.append(FigureSpec(
        "table1", "Table 1: surfaces and functional distance between methods",
        "Lower triangle: loss over the barycentric plane of the initialization and the minima "
        "of methods A and B. Upper triangle: functional distance (and label disagreement) "
        "from A along the line to B, on test data.",
        "pair_grid", {"methods": sorted({m for pr in surfaces for m in pr.split("|")},
                                        key=settings.methods.index),
                      "surfaces": surfaces, "distances": distances}))

    # Fig. 2: two initializations and the two SGD minima they lead to.
    sgd = "sgd" if "sgd" in ok else ok[0]
    if ctx.finished(exp, name(sgd, s1)):
        corners = fig2_corners(exp.init_label(s0), name(sgd, s0), exp.init_label(s1),
                               name(sgd, s1))
        _, fig2 = ctx.surface("bilinear", "fig2-edges", exp, corners,
                              steps=p.surface.plane_steps)
        result.figures.append(FigureSpec(
            "fig2", f"Fig. 2: two initializations and their {sgd} minima",
            f"Bilinear interpolation (eqs. 3-5) between two initializations and the {sgd} "
            "minima reached from them: each initialization is joined to its minimum by an "
            "edge (beta = 1: seed 0, beta = 0: seed 1), the two minima by the edge alpha = 0 "
            "and the two initializations by alpha = 1.", "surface",
            {"surface": fig2, "var": "loss", "corner_labels": corners}))

    # Fig. 3: four methods' minima from one initialization.
    four = [m for m in settings.bilinear_methods if m in ok]
    if len(four) == 4:
        corners = [name(m) for m in four]
        _, fig3 = ctx.surface("bilinear", "fig3", exp, corners, steps=p.surface.plane_steps)
        result.figures.append(FigureSpec(
            "fig3", "Fig. 3: the minima of four methods", "Bilinear interpolation between the "
            "minima of " + ", ".join(four) + " reached from one initialization.", "surface",
            {"surface": fig3, "var": "loss", "corner_labels": four}))

    # Fig. 1: a learning curve, its fast "transient" and slow "minimization" phases.
    result.figures.append(FigureSpec(
        "fig1", "Fig. 1: a learning curve",
        f"Training loss per epoch of {sgd} (seed {s0}), where the paper sees a rapid "
        "transient phase, then a slow minimization phase.", "curves",
        {"series": [{"label": sgd, "experiment": "main", "run": name(sgd)}],
         "columns": ["train_loss"], "x": "epoch"}))

    # Fig. 4: accuracy per method and initialization.
    series = [{"label": f"{m} (seed {s})", "experiment": "main", "run": name(m, s), "group": m}
              for m in settings.methods for s in p.seeds]
    columns = ["train_accuracy", "test_accuracy"]
    if exp.dataset().task == "language_model":  # perplexity in place of accuracy
        columns = ["train_perplexity", "test_perplexity"]
    result.figures.append(FigureSpec(
        "fig4", "Fig. 4: accuracy per method and initialization",
        "Training and test accuracy per epoch, one curve per method and seed.", "curves",
        {"series": series, "columns": columns, "x": "epoch"}))
    final = []
    for m in settings.methods:
        for s in p.seeds:
            last = exp.metrics(name(m, s)).iloc[-1]
            final.append({"method": m, "seed": s, "train_accuracy": float(last["train_accuracy"]),
                          "test_accuracy": float(last["test_accuracy"]),
                          "train_loss": float(last["train_loss"])})
    result.tables["final"] = ctx.table("final", pd.DataFrame(final))

    # Pairwise functional distance and label disagreement between every two minima.
    matrix = []
    for a, b in itertools.product(ok, ok):
        d = {"fdist": 0.0, "disagreement": 0.0} if a == b else None
        if d is None and (b, a) in {(r["a"], r["b"]) for r in matrix}:
            d = next({"fdist": r["fdist"], "disagreement": r["disagreement"]}
                     for r in matrix if (r["a"], r["b"]) == (b, a))
        if d is None:
            found = ctx.functional_distance(exp, name(a), name(b))
            d = {"fdist": found["fdist"], "disagreement": found["disagreement"]}
        matrix.append({"a": a, "b": b, **d})
    result.tables["matrix"] = ctx.table("matrix", pd.DataFrame(matrix))
    for value in ("fdist", "disagreement"):
        result.figures.append(FigureSpec(
            f"matrix-{value}", f"Pairwise {'functional distance' if value == 'fdist' else 'label disagreement'}",
            "Between the minima of every two methods from one initialization, on test data "
            "(eq. 4.1).", "matrix", {"table": result.tables["matrix"], "value": value,
                                    "row": "a", "col": "b"}))
    off = [r for r in matrix if r["a"] != r["b"]]
    result.measurements["mean_fdist"] = float(np.mean([r["fdist"] for r in off])) if off else None
    return result
