"""Low-loss curves between two minima (Garipov et al. 2018): a quadratic Bézier curve or a
polygonal chain whose bend is trained, evaluated against the straight line.

    fit_curve(model, w1, w2, data, kind="bezier", epochs=10) -> bend state dict
    curve_surface(model, w1, bend, w2, data, kind="bezier", steps=21) -> Dataset over t
    experiment_curve(EXP, "sgd", "adam")                       (what `lossurf curve` runs)

Geometry in :mod:`~lossurf.curves.bezier` (pure), the fit in :mod:`~lossurf.curves.train`
(pure), its resumable checkpoints in :mod:`~lossurf.curves.checkpoint`.
"""

from __future__ import annotations

from lossurf.curves.api import curve_surface, fit_curve
from lossurf.curves.bezier import CURVE_KINDS, chord_grid, curve_coefficients, curve_grid
from lossurf.curves.experiment import CurveResult, curve_dir, experiment_curve

__all__ = ["fit_curve", "curve_surface", "experiment_curve", "curve_dir", "CurveResult",
           "CURVE_KINDS", "curve_coefficients", "curve_grid", "chord_grid"]
