"""Hutchinson's estimator of the trace of a symmetric operator.

``tr(A) = E[z^T A z]`` for any probe ``z`` with ``E[z z^T] = I``; with Rademacher probes (entries
+-1) the variance of one sample is ``2 * sum_{i != j} A_ij^2``, the smallest of the usual
choices. Samples are drawn until the standard error of their mean falls to ``tol * |mean|`` (after
at least ``min_samples``), or ``max_samples`` ran out.

References:
    Hutchinson (1990), "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines"; Avron & Toledo (2011), "Randomized algorithms for estimating
    the trace of an implicit symmetric positive semi-definite matrix".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lossurf.errors import LossurfError

__all__ = ["TraceResult", "hutchinson"]


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate.

    Attributes:
        estimate: the mean of the samples ``z^T A z``.
        stderr: its standard error (``std / sqrt(samples)``; 0 with explicit probes).
        samples: ``[s]`` the individual ``z^T A z``.
        converged: whether ``stderr <= tol * |estimate|`` was reached.
        tol: the relative tolerance asked for.
    """

    estimate: float
    stderr: float
    samples: np.ndarray
    converged: bool
    tol: float


def check_hutchinson(tol: float, min_samples: int, max_samples: int) -> None:
    """Refuse bad settings of :func:`hutchinson` (also called before a store is made)."""
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
        raise LossurfError(f"min_samples must be an integer of at least 2, got {min_samples!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < min_samples:
        raise LossurfError(f"max_samples must be an integer of at least min_samples={min_samples}, "
                           f"got {max_samples!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise LossurfError(f"tol must be a positive number, got {tol!r}")


def hutchinson(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, tol: float = 1e-2,
               min_samples: int = 10, max_samples: int = 200, seed: int = 0,
               probes: torch.Tensor | None = None, device=None) -> TraceResult:
    """Estimate ``tr(A)`` from products ``A z`` with seeded Rademacher probes.

    Args:
        matvec: flat float64 vector in, ``A z`` out.
        n: the dimension.
        tol: stop when the standard error is at most ``tol * |estimate|`` (default 1e-2).
        min_samples: draw at least this many probes (default 10).
        max_samples: draw at most this many (default 200).
        seed: seeds the probes (default 0).
        probes: ``[s, n]`` explicit probes instead of random ones (e.g. the identity, which
            makes the sum exact); the estimate is then ``sum_z z^T A z`` over them, not a mean.
        device: where the probes live (default CPU).

    Returns:
        A :class:`TraceResult`.
    """
    if probes is not None:
        values = np.array([float(z.double() @ matvec(z.to(device, torch.float64)).to(z.device))
                           for z in probes])
        return TraceResult(float(values.sum()), 0.0, values, True, float(tol))
    check_hutchinson(tol, min_samples, max_samples)
    generator = torch.Generator().manual_seed(int(seed))
    values: list[float] = []
    converged = False
    while len(values) < max_samples:
        z = (torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1).to(device)
        values.append(float(z @ matvec(z).to(z.device, torch.float64)))
        if len(values) >= min_samples:
            mean, err = _mean_stderr(values)
            if err <= tol * abs(mean):
                converged = True
                break
    mean, err = _mean_stderr(values)
    return TraceResult(mean, err, np.array(values), converged, float(tol))


def _mean_stderr(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a)))
