"""Scalar summaries of 1-D loss profiles: basin width, barrier height, bumpiness.

All take plain arrays (a coordinate and the loss along it), so they apply equally to profiles
in alpha (interpolation lines) and in absolute weight-space distance (paper eq. 1, Fig. 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BASIN_REL", "Basin", "basin_extent", "basin_width", "barrier", "excess_variation",
           "bump_prominences", "count_bumps"]

#: A basin ends where the loss has risen by 10 % of the way from the minimum to the init loss
#: (scale-free, so digits and CIFAR-10 use one rule).
BASIN_REL = 0.1


def _crossing(x0: float, x1: float, y0: float, y1: float, level: float) -> float:
    """Where the segment (x0, y0)-(x1, y1) crosses ``level`` (linear interpolation)."""
    if y1 == y0:
        return x0
    return x0 + (level - y0) * (x1 - x0) / (y1 - y0)


@dataclass(frozen=True)
class Basin:
    """The connected region around a minimum where ``loss <= level``.

    ``left`` and ``right`` are where the piecewise-linear profile crosses ``level``; a side
    that reaches the end of the grid is ``truncated`` there (its end is the grid's end, so the
    true basin extends at least that far: the width is then a lower bound).
    """

    left: float
    right: float
    level: float
    truncated_left: bool
    truncated_right: bool

    @property
    def width(self) -> float:
        """``right - left``; a lower bound when :attr:`truncated`."""
        return float(self.right - self.left)

    @property
    def truncated(self) -> bool:
        """True when either side reaches an end of the grid."""
        return self.truncated_left or self.truncated_right


def basin_extent(
    x: np.ndarray, loss: np.ndarray, threshold: float, center: float | None = None
) -> Basin:
    """The basin around a minimum where ``loss <= loss_min + threshold``, side by side.

    Args:
        x: coordinates (increasing), e.g. alpha or lambda.
        loss: the loss at each coordinate (non-finite values count as above the level).
        threshold: the rise above the minimum that bounds the basin.
        center: take the minimum at the grid point nearest this coordinate (default: the
            global minimum of the profile).

    Returns:
        A :class:`Basin`.
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
    left = x[lo] if lo == 0 else _crossing(x[lo], x[lo - 1], y[lo], y[lo - 1], level)
    right = x[hi] if hi == len(y) - 1 else _crossing(x[hi], x[hi + 1], y[hi], y[hi + 1], level)
    if not np.isfinite(left):
        left = x[lo]
    if not np.isfinite(right):
        right = x[hi]
    return Basin(float(left), float(right), float(level), lo == 0, hi == len(y) - 1)


def basin_width(
    x: np.ndarray, loss: np.ndarray, threshold: float, center: float | None = None
) -> tuple[float, bool]:
    """Width of the connected region around a minimum where ``loss <= loss_min + threshold``.

    The region's ends are placed where the piecewise-linear profile crosses the level, so a
    parabola ``a x^2 / 2`` sampled finely has width ``2 sqrt(2 t / a)``. Arguments as in
    :func:`basin_extent`.

    Returns:
        ``(width, truncated)``: ``truncated`` is True when the region reaches an end of the
        grid, so the true width is at least the value returned.
    """
    basin = basin_extent(x, loss, threshold, center)
    return basin.width, basin.truncated


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


def bump_prominences(loss: np.ndarray) -> np.ndarray:
    """Prominence of every interior local maximum of a profile, in profile order.

    A maximum's prominence is its height above the higher of the two lowest points that
    separate it from a higher point (or from the profile's end) on either side (of two equal
    peaks, the left one counts the right one as higher) -- the
    topographic definition, so a ripple on the flank of a big bump has a small prominence
    and the big bump keeps its full height. Flat tops count once. The profile's two ends are
    not bumps (on a path between two minima they are the minima). Non-finite values count as
    +inf (an infinite peak).
    """
    y = np.asarray(loss, dtype=float)
    y = np.where(np.isnan(y), np.inf, y)
    n = len(y)
    out = []
    i = 1
    while i < n - 1:
        j = i
        while j + 1 < n - 1 and y[j + 1] == y[i]:  # a flat top spans i..j
            j += 1
        if y[i - 1] < y[i] and j + 1 < n and y[j + 1] < y[i]:
            peak = y[i]
            k, left_min = i - 1, y[i - 1]
            while k >= 0 and y[k] <= peak:
                left_min = min(left_min, y[k])
                k -= 1
            k, right_min = j + 1, y[j + 1]
            while k < n and y[k] < peak:  # an equal peak to the right counts as higher
                right_min = min(right_min, y[k])
                k += 1
            out.append(peak - max(left_min, right_min))
        i = j + 1
    return np.asarray(out, dtype=float)


def count_bumps(loss: np.ndarray, floor: float = 0.0, rel_floor: float = 0.0) -> int:
    """Number of bumps on a path: interior local maxima whose prominence exceeds a noise floor.

    Paper 4.4: with batch norm the path between minima is one sharp unimodal jump, without
    it "wide bumpy shapes that aren't necessarily unimodal" -- so a path's bumpiness is how
    many bumps it has, not how high they are (one tall barrier is one bump, three small
    ones are three).

    Args:
        loss: the profile.
        floor: absolute noise floor (a bump must rise more than this above its saddles).
        rel_floor: floor as a fraction of the profile's range ``max - min`` (finite values).
    """
    y = np.asarray(loss, dtype=float)
    finite = y[np.isfinite(y)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    level = max(float(floor), float(rel_floor) * spread)
    return int(np.sum(bump_prominences(y) > level))
