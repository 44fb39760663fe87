"""Stochastic Lanczos quadrature (SLQ): a smoothed estimate of the eigenvalue density.

The spectral density ``phi(t) = (1/n) sum_i delta(t - lambda_i)`` satisfies
``integral f(t) phi(t) dt = tr f(A) / n = E[v^T f(A) v]`` for unit probes ``v`` with
``E[v v^T] = I / n`` (normalized Rademacher vectors). ``m`` Lanczos steps from ``v`` give a Gauss
quadrature for ``v^T f(A) v``: nodes ``theta_j`` (Ritz values) and weights ``tau_j`` (squared
first components of the tridiagonal's eigenvectors), exact for polynomials of degree up to
``2m - 1``. Averaging over probes and replacing each delta by a Gaussian of width ``sigma`` gives
a smooth density; :func:`spectral_density` scales it by ``n`` so that it integrates to the
number of parameters (an eigenvalue *count* per unit eigenvalue).

References:
    Lin, Saad, Yang (2016), "Approximating spectral densities of large matrices";
    Ghorbani, Krishnan, Xiao (2019), "An investigation into neural net optimization via Hessian
    eigenvalue density"; Yao et al. (2020), PyHessian.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lossurf.errors import LossurfError
from lossurf.hessian.lanczos import lanczos_tridiagonal, random_unit_vector

__all__ = ["Quadrature", "slq", "spectral_density", "density_grid"]


@dataclass(frozen=True)
class Quadrature:
    """SLQ nodes and weights, one row per probe (each row's weights sum to 1).

    Attributes:
        nodes: ``[probes, m]`` Ritz values.
        weights: ``[probes, m]`` quadrature weights.
        steps: Lanczos steps per probe (``m``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    steps: int


def check_slq(probes: int, steps: int) -> None:
    """Refuse bad settings of :func:`slq` (also called before a store is made)."""
    for name, value in (("probes", probes), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LossurfError(f"{name} must be a positive integer, got {value!r}")


def check_density_grid(sigma: float, points: int) -> None:
    """Refuse bad settings of :func:`density_grid` (also called before a store is made)."""
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise LossurfError(f"sigma must be a positive fraction of the spectrum's width, got {sigma!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise LossurfError(f"points must be an integer of at least 2, got {points!r}")


def slq(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, probes: int = 4,
        steps: int = 80, seed: int = 0, device=None) -> Quadrature:
    """Gauss quadrature nodes and weights of the spectral density from ``probes`` random starts.

    Args:
        matvec: flat float64 vector in, ``A v`` out.
        n: the dimension.
        probes: number of random start vectors (default 4).
        steps: Lanczos steps per probe (default 80; capped at ``n``).
        seed: seeds the probes (default 0).
        device: where the Lanczos basis lives (default CPU).
    """
    check_slq(probes, steps)
    steps = min(steps, n)
    generator = torch.Generator().manual_seed(int(seed))
    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for p in range(probes):
        v = random_unit_vector(n, generator, device, rademacher=True)
        alpha, beta, _ = lanczos_tridiagonal(matvec, v, steps, generator=generator)
        t = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
        theta, s = np.linalg.eigh(t)
        nodes[p], weights[p] = theta, s[0] ** 2
    return Quadrature(nodes, weights, steps)


def density_grid(quadrature: Quadrature, *, sigma: float = 0.01, points: int = 1001
                 ) -> tuple[np.ndarray, float]:
    """A grid over the spectrum, padded by six widths, and the absolute Gaussian width.

    Args:
        quadrature: from :func:`slq`.
        sigma: Gaussian width as a fraction of the spectrum's extent (default 0.01).
        points: grid size (default 1001).

    Returns:
        ``(grid, sigma_absolute)``.
    """
    check_density_grid(sigma, points)
    lo, hi = float(quadrature.nodes.min()), float(quadrature.nodes.max())
    extent = hi - lo if hi > lo else max(abs(hi), 1.0)
    width = sigma * extent
    return np.linspace(lo - 6 * width, hi + 6 * width, points), width


def spectral_density(quadrature: Quadrature, grid: np.ndarray, sigma: float, n: int) -> np.ndarray:
    """The Gaussian-smoothed eigenvalue count density on ``grid`` (integrates to ``n``).

    Args:
        quadrature: from :func:`slq`.
        grid: eigenvalues at which to evaluate the density.
        sigma: the Gaussian's standard deviation (in eigenvalue units).
        n: the dimension (number of parameters).
    """
    t = np.asarray(grid, dtype=np.float64)[:, None, None]
    gauss = np.exp(-0.5 * ((t - quadrature.nodes[None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    per_probe = (gauss * quadrature.weights[None]).sum(-1)  # [grid, probes]
    return n * per_probe.mean(-1)
