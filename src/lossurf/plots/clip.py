"""Clip divergent, infinite and NaN values to a robust ceiling so they never break a scale.

A diverged point (loss 1e30, inf or NaN) would stretch a colour map or a y-axis until every
other value looks flat, and a colour map cannot show non-finite values at all. Every figure
therefore draws values through :func:`clip_values`: points above a robust ceiling, and
non-finite points, are drawn *at* the ceiling with a distinct marker or hatch, counted, and
named in the caption. Points never computed (the store's ``computed`` mask is False) are
missing, not clipped: they stay NaN and are drawn blank.

A finite value is divergent when it exceeds the robust bound ``q75 + factor * max(q75 - q25,
0.1 * |median|)`` of the finite values: with the default factor of 50 a surface whose loss rises
smoothly from 0.01 to 100 keeps every value, while 1e30 is clipped. Clipped points are drawn at
the *ceiling*, just above the largest kept value (5 % of the kept range higher), so the scale
is the data's own and the marks sit on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Clipped", "clip_values", "robust_bound", "clip_note"]


@dataclass(frozen=True)
class Clipped:
    """Values ready to draw.

    Attributes:
        values: float64, same shape as the input: clipped points set to ``ceiling``
            (``floor`` for -inf), missing points NaN, everything else unchanged.
        clipped: bool mask of the clipped points (non-finite or above the ceiling).
        missing: bool mask of points never computed (drawn blank, not counted as clipped).
        ceiling: the value clipped points are drawn at.
    """

    values: np.ndarray
    clipped: np.ndarray
    missing: np.ndarray
    ceiling: float

    @property
    def count(self) -> int:
        """Number of clipped points."""
        return int(self.clipped.sum())


def robust_bound(finite: np.ndarray, factor: float = 50.0) -> float:
    """A bound above every ordinary value of ``finite`` and below divergent outliers."""
    finite = np.asarray(finite, np.float64).ravel()
    if finite.size == 0:
        return np.inf
    q25, q50, q75 = np.percentile(finite, [25, 50, 75])
    spread = max(q75 - q25, 0.1 * abs(q50), 1e-12)
    return float(q75 + factor * spread)


def clip_values(
    values: np.ndarray,
    *,
    missing: np.ndarray | None = None,
    ceiling: float | None = None,
    factor: float = 50.0,
) -> Clipped:
    """Replace non-finite and divergent values by a ceiling and say which ones were replaced.

    Args:
        values: any numeric array.
        missing: optional bool mask of points that were never computed.
        ceiling: an explicit ceiling: values above it are clipped and drawn at it (default:
            just above the largest value below :func:`robust_bound`).
        factor: how many spreads above the upper quartile a value may lie (default 50).

    Returns:
        A :class:`Clipped` with the values to draw and the masks.
    """
    array = np.array(values, dtype=np.float64, copy=True)
    gone = np.zeros(array.shape, bool) if missing is None else np.asarray(missing, bool).copy()
    finite = np.isfinite(array) & ~gone
    if ceiling is None:
        kept = array[finite][array[finite] <= robust_bound(array[finite], factor)]
        top = float(kept.max()) if kept.size else 1.0
        if kept.size != (~gone).sum():  # headroom for the marks only when there are any
            span = float(np.ptp(kept)) if kept.size else 0.0
            top += 0.05 * (span if span > 0 else abs(top) or 1.0)
    else:
        top = float(ceiling)
    floor = float(array[finite].min()) if finite.any() else min(0.0, top)
    clipped = ~gone & (~finite | (finite & (array > top)))
    low = clipped & (array == -np.inf)
    array[clipped & ~low] = top
    array[low] = floor
    array[gone] = np.nan
    return Clipped(values=array, clipped=clipped, missing=gone, ceiling=top)


def clip_note(count: int, ceiling: float, what: str = "value") -> str:
    """The caption sentence for ``count`` clipped points (empty when none)."""
    if count == 0:
        return ""
    plural = "s" if count != 1 else ""
    return (
        f"{count} divergent, infinite or NaN {what}{plural} clipped at {ceiling:.4g} "
        "and marked (× markers / hatching)."
    )
