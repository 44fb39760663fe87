"""One-dimensional paths in weight space: the line between two points and the basin profile.

Every path and plane in lossurf is an *affine combination* of a few anchor weight vectors: a
geometry function returns a :class:`Grid`, that is named coordinates plus a coefficient array
of shape ``[*grid_shape, A]`` over the ``A`` anchors (float64, each row summing to 1). The
evaluator materializes ``sum_a c[a] * anchor[a]`` per grid point, so geometry never touches
weights except to measure distances.

References:
    Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces", eq. 1 (basin
    profile in absolute distance) and appendix A.1 eq. 2 (linear interpolation).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lossurf.errors import LossurfError

__all__ = ["Grid", "check_values", "check_plane_size", "line_grid", "basin_grid"]

#: Most values on one axis: more is a typo, and its linspace alone would fill the memory.
MAX_AXIS_POINTS = 100_000
#: Most points in a plane (a 3,162 x 3,162 grid): its coefficients take a few hundred MB.
MAX_PLANE_POINTS = 10_000_000


@dataclass(frozen=True)
class Grid:
    """Points of a path or plane as affine combinations of anchor weight vectors.

    Attributes:
        kind: ``line``, ``basin``, ``bilinear``, ``barycentric`` or ``affine``.
        dims: names of the coordinates, in array order (e.g. ``("alpha",)``).
        coords: one 1-D float64 array per dim.
        coefficients: ``[*shape, A]`` float64; point ``i`` is ``sum_a coefficients[i, a] *
            anchors[a]``.
        anchors: the role of each anchor, in coefficient order (e.g. ``("start", "end")``).
        attrs: JSON-friendly geometry facts for plots and provenance (orientation, anchor
            positions, distances).
    """

    kind: str
    dims: tuple[str, ...]
    coords: dict[str, np.ndarray]
    coefficients: np.ndarray
    anchors: tuple[str, ...]
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape (one entry per dim)."""
        return tuple(len(self.coords[d]) for d in self.dims)

    @property
    def num_points(self) -> int:
        """Number of grid points."""
        return int(np.prod(self.shape))

    def flat_coefficients(self) -> np.ndarray:
        """Coefficients as ``[P, A]`` in C (row-major) order of the grid."""
        return self.coefficients.reshape(self.num_points, len(self.anchors))

    def fingerprint(self) -> str:
        """sha256 of kind, dims, coordinates and coefficients: equal grids, equal fingerprints."""
        digest = hashlib.sha256()
        digest.update(self.kind.encode())
        digest.update(repr(self.dims).encode())
        digest.update(repr(self.anchors).encode())
        for d in self.dims:
            digest.update(np.ascontiguousarray(self.coords[d], dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.coefficients, dtype=np.float64).tobytes())
        return digest.hexdigest()


def check_values(
    values: Sequence[float] | np.ndarray | None,
    range_: tuple[float, float],
    steps: int,
    name: str,
    landmarks: Sequence[float] = (),
) -> np.ndarray:
    """Validate and return the coordinate values: ``values`` if given, else a linspace.

    Args:
        values: explicit coordinates (any order, at least two, finite, distinct).
        range_: ``(low, high)`` for the linspace when ``values`` is None.
        steps: number of linspace points (at least 2).
        name: coordinate name for error messages.
        landmarks: values (e.g. the anchors at 0 and 1) that a linspace point within rounding
            error of is snapped to exactly, so end points are evaluated exactly.

    Returns:
        A 1-D float64 array.
    """
    if values is not None:
        try:
            out = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            shown = values.tolist() if isinstance(values, np.ndarray) else values
            raise LossurfError(f"{name} values must be numbers, got {shown!r}; give a list "
                               "or array of numbers") from None
        if out.size < 2:
            raise LossurfError(
                f"{name} needs at least two values, got {out.size}; give two or more"
            )
        if out.size > MAX_AXIS_POINTS:
            raise LossurfError(f"{name} has {out.size:,} values, more than the "
                               f"{MAX_AXIS_POINTS:,} lossurf evaluates on one axis; give fewer")
    else:
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
            raise LossurfError(f"{name}: steps must be a whole number (an int, at least 2), got "
                               f"{steps!r}; e.g. steps={_as_int_hint(steps)}")
        if steps < 2:
            raise LossurfError(f"{name} needs at least two steps, got {steps!r}; use steps >= 2")
        if steps > MAX_AXIS_POINTS:
            raise LossurfError(f"{name}: {steps:,} steps are more than the {MAX_AXIS_POINTS:,} "
                               "lossurf evaluates on one axis; use fewer steps")
        low, high = _range(range_, name)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise LossurfError(f"{name} range ({low}, {high}) is not finite; give finite numbers")
        if low == high:
            raise LossurfError(f"{name} range ({low}, {high}) is empty; give low < high")
        if low > high:  # a reversed range would store the axis in descending order
            raise LossurfError(f"{name} range ({low}, {high}) runs backwards; give low < high, "
                               f"i.e. ({high}, {low})")
        out = np.linspace(low, high, int(steps), dtype=np.float64)
        for mark in landmarks:
            out[np.abs(out - mark) <= 1e-9 * abs(high - low)] = mark
    if not np.all(np.isfinite(out)):
        raise LossurfError(f"{name} values {out.tolist()} are not all finite; give finite numbers")
    if np.unique(out).size != out.size:
        raise LossurfError(f"{name} values repeat; give each value once")
    return out


def _range(range_: object, name: str) -> tuple[float, float]:
    """``(low, high)`` as floats, or a LossurfError naming what was given."""
    pair = None
    if isinstance(range_, (tuple, list, np.ndarray)) and len(range_) == 2:
        try:
            pair = tuple(float(v) for v in range_ if not isinstance(v, (str, bytes, bool)))
        except (TypeError, ValueError):
            pair = None
    if pair is None or len(pair) != 2:
        shown = range_.tolist() if isinstance(range_, np.ndarray) else range_
        raise LossurfError(f"{name} range must be two numbers (low, high), got {shown!r}; "
                           "e.g. range=(0.0, 1.0)")
    return pair


def _as_int_hint(steps: object) -> str:
    """A whole-number spelling of ``steps`` for the message (``3.0`` -> ``3``)."""
    try:
        value = float(steps)  # type: ignore[arg-type]
        return str(int(value)) if value.is_integer() and value >= 2 else "21"
    except (TypeError, ValueError):
        return "21"


def check_plane_size(first: np.ndarray, second: np.ndarray) -> None:
    """Refuse a plane of more than :data:`MAX_PLANE_POINTS` points (before it is built)."""
    if first.size * second.size > MAX_PLANE_POINTS:
        raise LossurfError(
            f"a plane of {first.size:,} x {second.size:,} points is more than the "
            f"{MAX_PLANE_POINTS:,} points lossurf evaluates in one grid; use fewer steps"
        )


def line_grid(
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    range: tuple[float, float] = (0.0, 1.0),
    steps: int = 21,
) -> Grid:
    """The line through two points, ``theta(alpha) = (1 - alpha) * start + alpha * end``.

    This is the paper's eq. 2, ``theta = alpha * theta1 + (1 - alpha) * theta2``, with
    ``theta2 = start`` and ``theta1 = end``: alpha = 0 is the start (``--from``), alpha = 1 the
    end (``--to``); alpha outside [0, 1] extrapolates (alpha = 2 is one full step past the end,
    as in the paper's Fig. 10).

    Args:
        alphas: explicit alpha values; overrides ``range``/``steps``.
        range: ``(low, high)`` alpha range (default (0, 1)).
        steps: number of alphas in ``range`` (default 21).

    Returns:
        A ``line`` grid over dim ``alpha`` with anchors ``("start", "end")``.
    """
    alpha = check_values(alphas, range, steps, "alpha", landmarks=(0.0, 1.0))
    coef = np.stack([1.0 - alpha, alpha], axis=-1)
    return Grid(
        kind="line",
        dims=("alpha",),
        coords={"alpha": alpha},
        coefficients=coef,
        anchors=("start", "end"),
        attrs={"geometry": "theta(alpha) = (1 - alpha) * start + alpha * end (paper eq. 2 with "
               "theta1 = end, theta2 = start); alpha=0 is start, alpha=1 is end"},
    )


def basin_grid(
    init_distance: float,
    distances: Sequence[float] | np.ndarray | None = None,
    *,
    max_distance: float | None = None,
    min_distance: float | None = None,
    steps: int = 41,
) -> Grid:
    """The basin profile in absolute distance, ``theta(l) = minimum + l * (init - minimum) / D``.

    The paper's eq. 1 with ``theta1 = minimum``, ``theta0 = init`` and ``D = ||init -
    minimum||`` over the moving parameters: ``lambda = 0`` is the minimum, ``lambda = D`` the
    initialization; negative lambdas move away from the initialization, lambdas past ``D``
    continue beyond it.

    Args:
        init_distance: ``D``, the distance from the minimum to the initialization (> 0).
        distances: explicit lambda values; overrides the range.
        max_distance: largest lambda (default ``1.5 * D``).
        min_distance: smallest lambda (default ``-max_distance / 3``, so the default range
            is ``(-D/2, 3D/2)``).
        steps: number of lambdas (default 41).

    Returns:
        A ``basin`` grid over dim ``lambda`` with anchors ``("minimum", "init")``.
    """
    d = float(init_distance)
    if not math.isfinite(d) or d <= 0.0:
        raise LossurfError(
            f"the minimum and the initialization are {d} apart; the basin profile needs two "
            "different, finite weight vectors"
        )
    if max_distance is not None and not (math.isfinite(float(max_distance))
                                         and float(max_distance) > 0.0):
        raise LossurfError(f"max_distance must be a positive distance from the minimum, got "
                           f"{max_distance}; the initialization is {d:.4g} away")
    high = 1.5 * d if max_distance is None else float(max_distance)
    # -max/3: by default (-D/2, 3D/2), where 41 steps put nodes at exactly 0 and D
    low = -high / 3.0 if min_distance is None else float(min_distance)
    lam = check_values(distances, (low, high), steps, "lambda", landmarks=(0.0, d))
    t = lam / d
    coef = np.stack([1.0 - t, t], axis=-1)
    return Grid(
        kind="basin",
        dims=("lambda",),
        coords={"lambda": lam},
        coefficients=coef,
        anchors=("minimum", "init"),
        attrs={
            "geometry": "theta(lambda) = minimum + lambda * (init - minimum) / ||init - minimum|| "
                        "(paper eq. 1); lambda=0 is the minimum, lambda=init_distance the init",
            "init_distance": d,
        },
    )
