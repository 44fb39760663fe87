"""Every figure and table of the paper, and the recipe figures that reproduce it.

One list, read by ``docs/paper-figures.md``'s test and by ``tests/test_paper_figures.py``:
each entry names the paper's figure or table, what it shows, the recipe that makes it and
the keys of that recipe's :class:`~lossurf.experiments.result.FigureSpec` records (the report
draws each in the recipe's section, anchor ``<recipe>-<key>``). Keys that end in ``*`` are
prefixes: Table 2 declares one surface per pair of methods, with and without batch norm.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperFigure", "PAPER_FIGURES", "VARIANT_FIGURES"]


@dataclass(frozen=True)
class PaperFigure:
    """One figure or table of the paper and the recipe figures that stand for it."""

    paper: str          # "Fig. 2", "Table 1"
    shows: str          # what the paper's figure shows
    recipe: str         # a key of lossurf.experiments.RECIPES
    keys: tuple[str, ...]
    presets: str = "digits, cifar10, cifar10-vgg"  # built-in presets that draw it


#: The figures every preset's run draws (whatever its switching variants).
PAPER_FIGURES: tuple[PaperFigure, ...] = (
    PaperFigure("Fig. 1", "a learning curve: fast transient phase, slow minimization phase",
                "optimizers", ("fig1",)),
    PaperFigure("Fig. 2", "bilinear surface over two initializations and their SGD minima",
                "optimizers", ("fig2",)),
    PaperFigure("Fig. 3", "bilinear surface over the minima of four methods from one init",
                "optimizers", ("fig3",)),
    PaperFigure("Table 1", "per pair of methods: barycentric surface over init and both minima "
                "(lower triangle), functional distance along the line between minima (upper)",
                "optimizers", ("table1",)),
    PaperFigure("Fig. 4", "training and test accuracy per method and initialization",
                "optimizers", ("fig4",)),
    PaperFigure("Fig. 5", "(a, c) init to minimum per method, one line per initialization; "
                "(b, d) between the minima of two methods per initialization",
                "restarts", ("fig5a", "fig5b")),
    PaperFigure("Fig. 6", "basins in absolute weight-space distance, past the initialization",
                "restarts", ("fig6",)),
    PaperFigure("Fig. 7", "switching methods at 25/50/75 %: accuracy, distance from init, "
                "lines between switched and pure minima; (d) Adadelta to ADAM at 1e-4",
                "switching", ("fig7-accuracy", "fig7-distance", "fig7-lines", "fig7d",
                              "fig7d-curves"), "digits, cifar10"),
    PaperFigure("Table 2", "loss surfaces with and without batch normalization",
                "batchnorm", ("table2-bn-*", "table2-no-bn-*", "table2-lines", "table2-accuracy"),
                "digits, cifar10, cifar10-vgg (not ptb: the LSTM has no batch norm)"),
    PaperFigure("Fig. 8", "without batch norm: init to minimum (top), minimum to minimum "
                "(bottom), one column per initialization", "batchnorm", ("fig8a", "fig8b"),
                "digits, cifar10, cifar10-vgg (not ptb: the LSTM has no batch norm)"),
    PaperFigure("Fig. 9", "Runge-Kutta training accuracy against SGD, SGD x2, ADAM",
                "runge-kutta", ("fig9-epochs", "fig9-evaluations")),
    PaperFigure("Table 3", "coefficients (a1, a2, q1) of the second-order Runge-Kutta methods",
                "runge-kutta", ("table3",)),
    PaperFigure("Fig. 10", "init to minimum extended to alpha = 2: the loss rises past the "
                "minimum", "restarts", ("fig10",)),
    PaperFigure("Fig. 11", "SGD from exotic initializations, with and without BN: (a) init to "
                "where training ended, (b) the plateau around the initialization",
                "init", ("fig11a", "fig11b")),
)

#: The learning-rate panels of Figs. 12-15: ``switching.variants`` of the presets named.
VARIANT_FIGURES: tuple[PaperFigure, ...] = tuple(
    PaperFigure(f"Fig. {n}({panel})", shows, "switching", (f"fig{n}{panel}", f"fig{n}{panel}-curves"),
                presets)
    for n, shows, presets in (
        (12, "NIN, SGD <-> ADAM at epochs 50 and 100, SGD at 0.1 / 0.05 / 0.01 after",
         "digits, cifar10"),
        (13, "VGG, SGD <-> ADAM at epochs 50 and 100, three learning-rate pairs after",
         "digits, cifar10-vgg"),
        (14, "VGG, SGD <-> Adadelta at epochs 50 and 100, SGD at 0.1 / 0.05 / 0.01 after",
         "digits, cifar10-vgg"),
        (15, "VGG, ADAM <-> Adadelta at epochs 50 and 100, ADAM at three learning rates",
         "digits, cifar10-vgg"),
    )
    for panel in "abc"
)
