"""Two-dimensional grids in weight space: bilinear, barycentric and the orthonormal affine plane.

All three return a :class:`~lossurf.surface.paths.Grid` whose coefficients are an affine
combination of the given points, so the evaluator treats them like any path.

References:
    Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces", appendix A.1,
    eqs. 3-5 (bilinear) and 6-8 (barycentric).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lossurf.errors import LossurfError
from lossurf.params import StateDict, flatten
from lossurf.surface.paths import Grid, check_plane_size, check_values

__all__ = ["bilinear_grid", "barycentric_grid", "affine_basis", "affine_grid", "PLANE_POINTS"]

#: How many weight vectors each plane kind takes.
PLANE_POINTS = {"bilinear": 4, "barycentric": 3, "affine": 3}


def bilinear_grid(
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    steps: int = 21,
    range: tuple[float, float] = (0.0, 1.0),
) -> Grid:
    """Bilinear interpolation over four points (paper eqs. 3-5).

    With the points ``p0..p3`` standing for the paper's ``theta1..theta4``::

        phi     = alpha * p0 + (1 - alpha) * p1
        varphi  = alpha * p2 + (1 - alpha) * p3
        theta   = beta * phi + (1 - beta) * varphi

    so the corners are ``(alpha, beta) = (1, 1) -> p0``, ``(0, 1) -> p1``, ``(1, 0) -> p2``,
    ``(0, 0) -> p3`` (recorded in attrs ``corner_alpha``/``corner_beta``).

    Args:
        alphas, betas: explicit coordinates; override ``range``/``steps``.
        steps: points per axis (default 21).
        range: ``(low, high)`` of both axes (default (0, 1); wider values extrapolate).

    Returns:
        A ``bilinear`` grid over dims ``(alpha, beta)`` with anchors ``p0..p3``.
    """
    a = check_values(alphas, range, steps, "alpha", landmarks=(0.0, 1.0))[:, None]
    b = check_values(betas, range, steps, "beta", landmarks=(0.0, 1.0))[None, :]
    check_plane_size(a, b)
    coef = np.stack([a * b, (1 - a) * b, a * (1 - b), (1 - a) * (1 - b)], axis=-1)
    return Grid(
        kind="bilinear",
        dims=("alpha", "beta"),
        coords={"alpha": a[:, 0], "beta": b[0, :]},
        coefficients=coef,
        anchors=("p0", "p1", "p2", "p3"),
        attrs={
            "geometry": "theta = beta*(alpha*p0 + (1-alpha)*p1) + (1-beta)*(alpha*p2 + "
                        "(1-alpha)*p3) (paper eqs. 3-5 with theta1..theta4 = p0..p3)",
            "corner_alpha": [1.0, 0.0, 1.0, 0.0],
            "corner_beta": [1.0, 1.0, 0.0, 0.0],
        },
    )


def barycentric_grid(
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    steps: int = 21,
    range: tuple[float, float] = (0.0, 1.0),
) -> Grid:
    """Barycentric interpolation over three points (paper eqs. 6-8).

    ``theta = p0 + alpha * (beta * d1 + (1 - beta) * d2)`` with ``d1 = p1 - p0`` and
    ``d2 = p2 - p0``: alpha = 0 is ``p0`` (for every beta), ``(1, 1)`` is ``p1`` and ``(1, 0)``
    is ``p2``. Typically ``p0`` is the initialization and ``p1``, ``p2`` two minima.

    Args:
        alphas, betas: explicit coordinates; override ``range``/``steps``.
        steps: points per axis (default 21).
        range: ``(low, high)`` of both axes (default (0, 1)).

    Returns:
        A ``barycentric`` grid over dims ``(alpha, beta)`` with anchors ``p0, p1, p2``.
    """
    a = check_values(alphas, range, steps, "alpha", landmarks=(0.0, 1.0))[:, None]
    b = check_values(betas, range, steps, "beta", landmarks=(0.0, 1.0))[None, :]
    check_plane_size(a, b)
    coef = np.stack([np.broadcast_to(1 - a, (a.size, b.size)), a * b, a * (1 - b)], axis=-1)
    return Grid(
        kind="barycentric",
        dims=("alpha", "beta"),
        coords={"alpha": a[:, 0], "beta": b[0, :]},
        coefficients=np.ascontiguousarray(coef),
        anchors=("p0", "p1", "p2"),
        attrs={
            "geometry": "theta = p0 + alpha*(beta*(p1-p0) + (1-beta)*(p2-p0)) (paper eqs. 6-8)",
            # p0 is the whole alpha = 0 edge; (0, 0) is one of its points
            "corner_alpha": [0.0, 1.0, 1.0],
            "corner_beta": [0.0, 1.0, 0.0],
        },
    )


def affine_basis(points: Sequence[StateDict], keys: Sequence[str]) -> dict:
    """Orthonormal coordinates of the plane through three points (Gram-Schmidt, float64).

    ``e1 = d1 / |d1|`` and ``e2`` is ``d2`` minus its ``e1`` component, normalized, with
    ``d1 = p1 - p0``, ``d2 = p2 - p0`` flattened over ``keys``. Coordinates are in units of
    weight-space distance: ``p0`` sits at (0, 0), ``p1`` at ``(|d1|, 0)`` and ``p2`` at
    ``(d2 . e1, d2 . e2)``.

    Args:
        points: three state dicts of one architecture.
        keys: the moving keys to flatten (see :func:`lossurf.params.moving_keys`).

    Returns:
        ``{"e1", "e2"}`` (flat float64 tensors) and ``{"x", "y"}`` (the anchors' coordinates).
    """
    if len(points) != 3:
        raise LossurfError(f"the affine plane needs 3 points, got {len(points)}")
    p0, p1, p2 = (flatten(p, keys) for p in points)
    d1, d2 = p1 - p0, p2 - p0
    n1 = float(torch.linalg.vector_norm(d1))
    if n1 == 0.0:
        raise LossurfError(
            "points 0 and 1 are identical; the affine plane needs three distinct points"
        )
    e1 = d1 / n1
    c = float(d2 @ e1)
    u = d2 - c * e1
    h = float(torch.linalg.vector_norm(u))
    # Collinear points span no plane; relative threshold above float32 checkpoint rounding.
    if h <= 1e-6 * max(n1, float(torch.linalg.vector_norm(d2))):
        raise LossurfError(
            "the three points are collinear, so they span no plane; pick three points that are "
            "not on one line (or use the line command)"
        )
    e2 = u / h
    return {"e1": e1, "e2": e2, "x": [0.0, n1, c], "y": [0.0, 0.0, h]}


def affine_grid(
    positions_x: Sequence[float],
    positions_y: Sequence[float],
    *,
    steps: int = 21,
    margin: float = 0.2,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
) -> Grid:
    """A grid over the plane of three points in orthonormal coordinates, with margins.

    Given the anchors' coordinates from :func:`affine_basis` (``p0`` at (0, 0), ``p1`` at
    ``(x1, 0)``, ``p2`` at ``(x2, y2)``), point ``(x, y)`` is ``p0 + x*e1 + y*e2``, which is
    the affine combination ``(1 - a - b) p0 + a p1 + b p2`` with ``b = y / y2`` and
    ``a = (x - b x2) / x1``.

    Args:
        positions_x, positions_y: the three anchors' coordinates.
        steps: points per axis (default 21).
        margin: how far the grid extends past the anchors' bounding box on every side, as a
            fraction of its width (x) and height (y) (default 0.2).
        xs, ys: explicit coordinates; override ``steps``/``margin``.

    Returns:
        An ``affine`` grid over dims ``(x, y)`` with anchors ``p0, p1, p2``; attrs
        ``anchor_x``/``anchor_y`` hold the anchors' positions for plots.
    """
    px, py = np.asarray(positions_x, np.float64), np.asarray(positions_y, np.float64)
    if px.shape != (3,) or py.shape != (3,) or py[0] != 0 or py[1] != 0 or px[0] != 0:
        raise LossurfError(
            "anchor positions must come from affine_basis (p0 at the origin, p1 on x)"
        )
    if not np.isfinite(margin) or margin < 0:
        raise LossurfError(f"margin must be a finite fraction >= 0, got {margin}")
    width, height = np.ptp(px), np.ptp(py)
    x = check_values(
        xs, (px.min() - margin * width, px.max() + margin * width), steps, "x", landmarks=px
    )
    y = check_values(
        ys, (py.min() - margin * height, py.max() + margin * height), steps, "y", landmarks=py
    )
    check_plane_size(x, y)
    b = np.broadcast_to(y[None, :] / py[2], (x.size, y.size))
    a = (x[:, None] - b * px[2]) / px[1]
    coef = np.stack([1.0 - a - b, a, b], axis=-1)
    return Grid(
        kind="affine",
        dims=("x", "y"),
        coords={"x": x, "y": y},
        coefficients=np.ascontiguousarray(coef),
        anchors=("p0", "p1", "p2"),
        attrs={
            "geometry": "theta = p0 + x*e1 + y*e2, e1, e2 orthonormal (Gram-Schmidt of p1-p0, "
                        "p2-p0); coordinates in units of weight-space distance",
            "anchor_x": px.tolist(),
            "anchor_y": py.tolist(),
            "margin": float(margin),
        },
    )
