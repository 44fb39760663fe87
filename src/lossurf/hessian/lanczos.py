"""Lanczos with full reorthogonalization: top eigenpairs of a symmetric operator.

Only matrix-vector products are needed (here Hessian-vector products). The Krylov basis is kept
in float64 and every new vector is orthogonalized twice against all previous ones ("full
reorthogonalization", classical Gram-Schmidt applied twice), so the Ritz values do not develop
the spurious copies plain Lanczos produces in finite precision. The same routine, run a fixed
number of steps from a given start vector, gives the Gauss quadrature nodes and weights of
stochastic Lanczos quadrature (:mod:`lossurf.hessian.density`).

Convergence of a Ritz pair ``(theta, u)`` is judged by its residual ``||A u - theta u||``, which
Lanczos knows without another product: ``beta_m * |s_m|`` (last Lanczos coefficient times the
last component of the small eigenvector). The top ``k`` pairs have converged when every residual
is at most ``tol * |theta|``; the eigenvalue error is then at most the residual (and typically its
square over the spectral gap).

References:
    Golub & Van Loan, Matrix Computations (4th ed.), sections 10.1-10.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lossurf.errors import LossurfError

__all__ = ["LanczosResult", "lanczos_top", "lanczos_tridiagonal", "random_unit_vector"]

Matvec = Callable[[torch.Tensor], torch.Tensor]
#: A Lanczos coefficient below this fraction of the largest |T| entry means the Krylov space is
#: invariant (an exact subspace was found): restart from a fresh orthogonal direction.
BREAKDOWN = 1e-12


@dataclass(frozen=True)
class LanczosResult:
    """Top eigenpairs found by :func:`lanczos_top`.

    Attributes:
        eigenvalues: ``[k]`` largest Ritz values, descending.
        eigenvectors: ``[k, n]`` unit Ritz vectors (float64), in the same order.
        residuals: ``[k]`` residual norms ``||A u - theta u||``.
        iterations: Lanczos steps taken (= matrix-vector products).
        converged: whether every residual met the tolerance.
        tol: the relative tolerance asked for.
    """

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    residuals: np.ndarray
    iterations: int
    converged: bool
    tol: float


def random_unit_vector(n: int, generator: torch.Generator, device=None,
                       rademacher: bool = False) -> torch.Tensor:
    """A seeded random unit vector of length ``n`` (float64): Gaussian or Rademacher."""
    if rademacher:
        v = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
    else:
        v = torch.randn(n, generator=generator, dtype=torch.float64)
    return (v / v.norm()).to(device)


def _orthogonalize(w: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    if not basis:
        return w
    q = torch.stack(basis)
    for _ in range(2):  # twice is enough (Kahan-Parlett "twice is enough")
        w = w - q.T @ (q @ w)
    return w


def lanczos_tridiagonal(matvec: Matvec, start: torch.Tensor, steps: int, *,
                        generator: torch.Generator | None = None,
                        stop: Callable[[np.ndarray, np.ndarray, list[torch.Tensor]], bool] | None = None,
                        ) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
    """Run up to ``steps`` Lanczos steps from ``start`` with full reorthogonalization.

    Args:
        matvec: the symmetric operator, flat float64 vector in and out.
        start: the start vector (normalized here).
        steps: most steps (matrix-vector products); at most ``n``.
        generator: seeds the restart direction after a breakdown (default: a fixed seed).
        stop: called after each step with ``(alpha, beta, basis)``; returning True ends the run.

    Returns:
        ``(alpha [m], beta [m], basis)``: the tridiagonal ``T`` has diagonal ``alpha`` and
        off-diagonal ``beta[:-1]``; ``beta[-1]`` is the coefficient of the next (unused) vector.
        A zero in ``beta[:-1]`` marks a restart after an invariant subspace was found.
    """
    n = start.numel()
    steps = min(int(steps), n)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    q = start.to(torch.float64) / start.norm()
    basis: list[torch.Tensor] = []
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    for j in range(steps):
        basis.append(q)
        w = matvec(q).to(q.device, torch.float64)
        a = float(q @ w)
        w = _orthogonalize(w, basis)  # removes the alpha q_j and beta q_{j-1} terms too
        b = float(w.norm())
        alpha.append(a)
        scale = max(scale, abs(a), b)
        if b <= BREAKDOWN * max(scale, 1e-300) and j + 1 < steps:
            # invariant subspace: continue from a random direction orthogonal to the basis
            beta.append(0.0)
            w = _orthogonalize(random_unit_vector(n, generator, q.device), basis)
            q = w / w.norm()
        else:
            beta.append(b)
            q = w / b if b > 0 else w
        if stop is not None and stop(np.array(alpha), np.array(beta), basis):
            break
    return np.array(alpha), np.array(beta), basis


def _ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = len(alpha)
    t = np.diag(alpha) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    return np.linalg.eigh(t)


def lanczos_top(matvec: Matvec, n: int, k: int = 1, *, tol: float = 1e-4, max_iter: int = 200,
                seed: int = 0, device=None) -> LanczosResult:
    """The ``k`` largest (algebraic) eigenvalues of a symmetric operator and their vectors.

    Args:
        matvec: flat float64 vector in, ``A v`` out.
        n: the dimension.
        k: how many eigenpairs (default 1).
        tol: relative residual tolerance, ``||A u - theta u|| <= tol * |theta|`` (default 1e-4).
        max_iter: most Lanczos steps (default 200; capped at ``n``).
        seed: seeds the start vector (default 0).
        device: where the basis lives (default CPU).

    Returns:
        A :class:`LanczosResult`; ``converged`` is False when ``max_iter`` ran out first.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise LossurfError(f"k must be an integer from 1 to the number of parameters ({n}), got {k!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise LossurfError(f"tol must be a number between 0 and 1, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < k:
        raise LossurfError(f"max_iter must be an integer of at least k={k}, got {max_iter!r}")
    generator = torch.Generator().manual_seed(int(seed))
    start = random_unit_vector(n, generator, device)

    def converged(alpha: np.ndarray, beta: np.ndarray, _basis) -> bool:
        if len(alpha) < k:
            return False
        if len(alpha) == n:
            return True
        theta, s = _ritz(alpha, beta)
        res = np.abs(beta[-1] * s[-1, -k:])
        return bool(np.all(res <= tol * np.maximum(np.abs(theta[-k:]), 1e-300)))

    alpha, beta, basis = lanczos_tridiagonal(matvec, start, max_iter, generator=generator,
                                             stop=converged)
    theta, s = _ritz(alpha, beta)
    order = np.argsort(theta)[::-1][:k]
    q = torch.stack(basis)  # [m, n]
    vectors = torch.as_tensor(s[:, order].T.copy(), dtype=torch.float64, device=q.device) @ q
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    residuals = np.abs(beta[-1] * s[-1, order]) if len(alpha) < n else np.zeros(k)
    ok = bool(np.all(residuals <= tol * np.maximum(np.abs(theta[order]), 1e-300)))
    return LanczosResult(theta[order].copy(), vectors, residuals, len(alpha), ok, float(tol))
