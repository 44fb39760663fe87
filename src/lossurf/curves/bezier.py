"""Curves between two minima as affine combinations of three anchors (pure geometry).

Garipov et al. (2018) connect two minima ``w1`` and ``w2`` by a curve with one trainable bend
``theta``:

- quadratic Bézier: ``phi(t) = (1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2``;
- polygonal chain: ``w1 -> theta -> w2``, linear on ``[0, 1/2]`` and on ``[1/2, 1]``.

Either way a point of the curve is an affine combination of the anchors ``(start, bend, end)``,
so a curve is a :class:`~lossurf.surface.paths.Grid` over ``t`` and runs on the one evaluator.
The straight line between the end points is the same kind of grid over the same ``t`` with
anchors ``(start, end)``.

References:
    Garipov, Izmailov, Podoprikhin, Vetrov, Wilson, "Loss Surfaces, Mode Connectivity, and Fast
    Ensembling of DNNs", NeurIPS 2018, section 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lossurf.errors import LossurfError
from lossurf.surface.paths import Grid, check_values

__all__ = ["CURVE_KINDS", "check_kind", "curve_coefficients", "curve_grid", "chord_grid", "point_state"]

#: Curve kinds and their formula (the CLI's --kind choices).
CURVE_KINDS: dict[str, str] = {
    "bezier": "phi(t) = (1-t)^2 start + 2t(1-t) bend + t^2 end (quadratic Bezier)",
    "chain": "phi(t) = start -> bend on [0, 1/2], bend -> end on [1/2, 1] (polygonal chain)",
}


def check_kind(kind: str) -> str:
    """``kind`` if it is a known curve kind; else a :class:`LossurfError` naming the choices."""
    if kind not in CURVE_KINDS:
        raise LossurfError(f"unknown curve kind {kind!r}; choose one of {sorted(CURVE_KINDS)}")
    return kind


def curve_coefficients(kind: str, t: Sequence[float] | np.ndarray) -> np.ndarray:
    """Coefficients ``[T, 3]`` (float64) of ``(start, bend, end)`` at each ``t``.

    Exact at the ends: ``t = 0`` gives ``(1, 0, 0)`` and ``t = 1`` gives ``(0, 0, 1)`` bit for
    bit, so the curve's end points are the anchors themselves. Rows sum to 1.
    """
    check_kind(kind)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if kind == "bezier":
        return np.stack([(1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t], axis=-1)
    first = t < 0.5
    s = np.where(first, 2.0 * t, 2.0 * t - 1.0)  # position within the active segment
    zero = np.zeros_like(t)
    return np.stack([np.where(first, 1.0 - s, zero),
                     np.where(first, s, 1.0 - s),
                     np.where(first, zero, s)], axis=-1)


def _t_values(ts: Sequence[float] | np.ndarray | None, steps: int) -> np.ndarray:
    t = check_values(ts, (0.0, 1.0), steps, "t", landmarks=(0.0, 0.5, 1.0))
    if t.min() < 0.0 or t.max() > 1.0:
        raise LossurfError(f"curve parameter t must lie in [0, 1], got {t.min()} .. {t.max()}; "
                           "a curve is not defined past its end points")
    return t


def curve_grid(kind: str, ts: Sequence[float] | np.ndarray | None = None, *, steps: int = 21) -> Grid:
    """The curve of ``kind`` over ``t`` as a grid with anchors ``("start", "bend", "end")``.

    Args:
        kind: ``bezier`` or ``chain``.
        ts: explicit t values in [0, 1]; override ``steps``.
        steps: number of evenly spaced t in [0, 1] (default 21; 0, 1/2 and 1 are exact).
    """
    t = _t_values(ts, steps)
    return Grid(kind=f"curve-{check_kind(kind)}", dims=("t",), coords={"t": t},
                coefficients=curve_coefficients(kind, t), anchors=("start", "bend", "end"),
                attrs={"geometry": CURVE_KINDS[kind] + "; t=0 is start, t=1 is end"})


def chord_grid(ts: Sequence[float] | np.ndarray | None = None, *, steps: int = 21) -> Grid:
    """The straight line ``(1 - t) start + t end`` over the same ``t`` as :func:`curve_grid`."""
    t = _t_values(ts, steps)
    return Grid(kind="curve-line", dims=("t",), coords={"t": t},
                coefficients=np.stack([1.0 - t, t], axis=-1), anchors=("start", "end"),
                attrs={"geometry": "theta(t) = (1-t) start + t end (the straight line)"})


def point_state(kind: str, t: float, start: dict[str, torch.Tensor], bend: dict[str, torch.Tensor],
                end: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict at ``t`` on the curve (float64 accumulation; see
    :func:`lossurf.params.combine`)."""
    from lossurf.params import combine

    return combine([start, bend, end], curve_coefficients(kind, [t])[0])
