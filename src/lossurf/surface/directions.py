"""Directions around one end point: seeded random (Li et al.'s filter normalization) and grids.

A direction surface around weights ``theta`` with directions ``d1, d2`` is the affine grid over
the anchors ``(theta, theta + s1*d1, theta + s2*d2)``: point ``(a, b)`` is ``theta + a*d1 +
b*d2``, the combination ``(1 - a/s1 - b/s2, a/s1, b/s2)``. So random, PCA and Hessian directions
all run on the one evaluator, store and resume machinery as every path and plane.

Random directions (Li et al. 2018, section 4): every entry ``N(0, 1)`` from a seeded
``torch.Generator``, then normalized per tensor:

- ``filter`` (default): each filter (a conv weight's output channel ``d[i]``, a linear weight's
  row) rescaled to the norm of the same filter of the weights, ``d_f <- d_f / |d_f| * |theta_f|``;
- ``layer``: each tensor rescaled to the weights' tensor norm;
- ``none``: the raw Gaussian.

1-D parameters (biases, batch-norm weight and bias) are zeroed by default, Li et al.'s
``ignore='biasbn'``; with ``bias_bn="keep"`` they are normalized as one filter each. Batch-norm
running statistics are never part of a direction: they are statistics of the weights, not
weights (``bn="recompute"`` re-estimates them at every point).

References:
    Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
    NeurIPS 2018, sections 4 (filter normalization) and 7 (PCA of the trajectory).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lossurf.errors import LossurfError
from lossurf.params import StateDict
from lossurf.surface.paths import Grid, check_plane_size, check_values

__all__ = [
    "NORMALIZATIONS",
    "BIAS_BN",
    "random_direction",
    "normalize_direction",
    "direction_plane_grid",
    "direction_line_grid",
]

#: Normalizations of a random direction.
NORMALIZATIONS = ("filter", "layer", "none")
#: What happens to 1-D parameters (biases, batch-norm weight and bias).
BIAS_BN = ("zero", "keep")


def _check_options(normalization: str, bias_bn: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise LossurfError(
            f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    if bias_bn not in BIAS_BN:
        raise LossurfError(f"unknown bias_bn {bias_bn!r}; choose one of {', '.join(BIAS_BN)}")


def normalize_direction(
    direction: torch.Tensor, weight: torch.Tensor, normalization: str = "filter",
    bias_bn: str = "zero",
) -> torch.Tensor:
    """Normalize one tensor of a direction against the matching weight tensor (float64).

    Args:
        direction: the raw direction tensor (same shape as ``weight``).
        weight: the weights' tensor.
        normalization: ``filter``, ``layer`` or ``none``.
        bias_bn: ``zero`` (1-D tensors become zero, Li et al.'s default) or ``keep`` (1-D
            tensors are normalized as one filter).

    Returns:
        The normalized direction in float64. A filter whose weights are all zero gets a zero
        direction (its scale is zero).
    """
    _check_options(normalization, bias_bn)
    d = direction.detach().to("cpu", torch.float64)
    w = weight.detach().to("cpu", torch.float64)
    if d.shape != w.shape:
        raise LossurfError(f"direction of shape {tuple(d.shape)} for weights {tuple(w.shape)}")
    if w.dim() <= 1 and bias_bn == "zero":
        return torch.zeros_like(d)
    if normalization == "none":
        return d
    # filter: one row per output channel; 1-D tensors (kept) and layer-wise: one row
    rows = w.shape[0] if normalization == "filter" and w.dim() >= 2 else 1
    d2, w2 = d.reshape(rows, -1), w.reshape(rows, -1)
    dn = torch.linalg.vector_norm(d2, dim=1, keepdim=True)
    wn = torch.linalg.vector_norm(w2, dim=1, keepdim=True)
    scale = torch.where(dn > 0, wn / torch.where(dn > 0, dn, torch.ones_like(dn)), 0.0)
    return (d2 * scale).reshape(d.shape)


def random_direction(
    weights: StateDict,
    keys: Sequence[str],
    generator: torch.Generator,
    *,
    normalization: str = "filter",
    bias_bn: str = "zero",
) -> dict[str, torch.Tensor]:
    """One seeded Gaussian direction over ``keys``, normalized against ``weights``.

    Entries are drawn in float64, key by key in ``keys`` order, from ``generator`` (so a
    generator seeded once gives the same ``d1``, then ``d2``, on every machine), normalized by
    :func:`normalize_direction` and cast to each weight's dtype.

    Args:
        weights: the end point's state dict.
        keys: the parameters to move (see :func:`lossurf.params.moving_keys`; never BN
            running statistics).
        generator: a seeded CPU ``torch.Generator``.
        normalization, bias_bn: see :func:`normalize_direction`.

    Returns:
        ``{key: tensor}`` shaped and typed like the weights.
    """
    _check_options(normalization, bias_bn)
    out = {}
    for key in keys:
        w = weights[key]
        raw = torch.randn(tuple(w.shape), generator=generator, dtype=torch.float64)
        out[key] = normalize_direction(raw, w, normalization, bias_bn).to(w.dtype)
    return out


def _scaled(values: np.ndarray, scale: float) -> np.ndarray:
    return values / float(scale)


def direction_plane_grid(
    kind: str,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    range_x: tuple[float, float] = (-1.0, 1.0),
    range_y: tuple[float, float] = (-1.0, 1.0),
    steps: int = 21,
    scales: tuple[float, float] = (1.0, 1.0),
    dims: tuple[str, str] = ("alpha", "beta"),
) -> Grid:
    """The plane ``theta + a*d1 + b*d2`` over anchors ``(theta, theta + s1*d1, theta + s2*d2)``.

    Point ``(a, b)`` has coefficients ``(1 - a/s1 - b/s2, a/s1, b/s2)``. The scales ``s`` let
    unit-norm directions (PCA, Hessian) be stored as anchors far enough from ``theta`` that
    float32 rounding of ``theta + s*d`` is small relative to ``s*d``.

    Args:
        kind: the store's ``lossurf_kind`` (``random``, ``pca``, ``hessian``).
        alphas, betas: explicit coordinates; override the ranges.
        range_x, range_y: coordinate ranges (default (-1, 1) each).
        steps: points per axis (default 21).
        scales: ``(s1, s2)``, positive.
        dims: coordinate names (default ``("alpha", "beta")``).

    Returns:
        A Grid with anchors ``("center", "center+d1", "center+d2")``; the center, at (0, 0), is
        a grid node whenever 0 lies in the ranges (snapped exactly).
    """
    s1, s2 = (float(s) for s in scales)
    if not (np.isfinite(s1) and np.isfinite(s2) and s1 > 0 and s2 > 0):
        raise LossurfError(f"direction scales must be positive and finite, got {scales}")
    a = check_values(alphas, range_x, steps, dims[0], landmarks=(0.0,))
    b = check_values(betas, range_y, steps, dims[1], landmarks=(0.0,))
    check_plane_size(a, b)
    ca = np.broadcast_to(_scaled(a, s1)[:, None], (a.size, b.size))
    cb = np.broadcast_to(_scaled(b, s2)[None, :], (a.size, b.size))
    coef = np.stack([1.0 - ca - cb, ca, cb], axis=-1)
    return Grid(
        kind=kind,
        dims=tuple(dims),
        coords={dims[0]: a, dims[1]: b},
        coefficients=np.ascontiguousarray(coef),
        anchors=("center", "center+d1", "center+d2"),
        attrs={
            "geometry": f"theta = center + {dims[0]}*d1 + {dims[1]}*d2; anchors center, "
                        "center + s1*d1, center + s2*d2",
            "scales": [s1, s2],
            # plots label the anchors at these positions: only the center lies on the grid
            "corner_alpha": [0.0],
            "corner_beta": [0.0],
        },
    )


def direction_line_grid(
    kind: str,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    range: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    scale: float = 1.0,
) -> Grid:
    """The line ``theta + a*d1`` over anchors ``(theta, theta + s*d1)`` (coefficients
    ``(1 - a/s, a/s)``), over dim ``alpha``; see :func:`direction_plane_grid`."""
    s = float(scale)
    if not (np.isfinite(s) and s > 0):
        raise LossurfError(f"the direction scale must be positive and finite, got {scale}")
    a = check_values(alphas, range, steps, "alpha", landmarks=(0.0,))
    t = _scaled(a, s)
    return Grid(
        kind=kind,
        dims=("alpha",),
        coords={"alpha": a},
        coefficients=np.stack([1.0 - t, t], axis=-1),
        anchors=("center", "center+d1"),
        attrs={"geometry": "theta = center + alpha*d1; anchors center, center + s*d1",
               "scales": [s]},
    )
