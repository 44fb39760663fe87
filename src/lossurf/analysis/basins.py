"""Scalar summaries of 1-D loss profiles: basin width, barrier height, bumpiness.

All take plain arrays (a coordinate and the loss along it), so they apply equally to profiles
in alpha (interpolation lines) and in absolute weight-space distance (paper eq. 1, Fig. 6).
"""

from __future__ import annotations

import numpy as np

__all__ = ["basin_width", "barrier", "excess_variation"]


def _crossing(x0: float, x1: float, y0: float, y1: float, level: float) -> float:
    """Where the segment (x0, y0)-(x1, y1) crosses ``level`` (linear interpolation)."""
    if y1 == y0:
        return x0
    return x0 + (level - y0) * (x1 - x0) / (y1 - y0)


def basin_width(
    x: np.ndarray, loss: np.ndarray, threshold: float, center: float | None = None
) -> tuple[float, bool]:
    """Width of the connected region around a minimum where ``loss <= loss_min + threshold``.

    The region's ends are placed where the piecewise-linear profile crosses the level, so a
    parabola ``a x^2 / 2`` sampled finely has width ``2 sqrt(2 t / a)``.

    Args:
        x: coordinates (increasing), e.g. alpha or lambda.
        loss: the loss at each coordinate (non-finite values count as above the level).
        threshold: the rise above the minimum that bounds the basin.
        center: look for the minimum at the grid point nearest this coordinate's basin
            (default: the global minimum of the profile).

    Returns:
        ``(width, truncated)``: ``truncated`` is True when the region reaches an end of the
        grid, so the true width is at least the value returned.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(loss, dtype=float)
    y = np.where(np.isfinite(y), y, np.inf)
    if center is None:
        i = int(np.argmin(y))
    else:
        i = int(np.argmin(np.abs(x - center)))
    level = y[i] + threshold
    lo, hi = i, i
    while lo > 0 and y[lo - 1] <= level:
        lo -= 1
    while hi < len(y) - 1 and y[hi + 1] <= level:
        hi += 1
    truncated = lo == 0 or hi == len(y) - 1
    left = x[lo] if lo == 0 else _crossing(x[lo], x[lo - 1], y[lo], y[lo - 1], level)
    right = x[hi] if hi == len(y) - 1 else _crossing(x[hi], x[hi + 1], y[hi], y[hi + 1], level)
    if not np.isfinite(left):
        left = x[lo]
    if not np.isfinite(right):
        right = x[hi]
    return float(right - left), bool(truncated)


def barrier(loss: np.ndarray) -> float:
    """Height of the loss barrier on a path between two end points (the profile's first and
    last values): ``max(loss) - max(loss[0], loss[-1])``, 0 when the path never rises above
    both ends. Infinite losses give ``inf``."""
    y = np.asarray(loss, dtype=float)
    y = np.where(np.isnan(y), np.inf, y)
    return float(max(0.0, np.max(y) - max(y[0], y[-1])))


def excess_variation(loss: np.ndarray) -> float:
    """Bumpiness of a path: its total variation minus ``|loss[-1] - loss[0]|`` (0 for a
    monotone profile, twice the barrier for a single bump)."""
    y = np.asarray(loss, dtype=float)
    return float(np.sum(np.abs(np.diff(y))) - abs(y[-1] - y[0]))
