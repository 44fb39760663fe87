"""Epsilon-sharpness (Keskar et al. 2017): the largest relative loss rise in a box around a point.

For parameters ``x`` and loss ``f``, with the box ``C_eps = {z : |z_i| <= eps * (|x_i| + 1)}``
(the paper's definition with ``A = I``, the full parameter space)::

    sharpness = 100 * (max_{z in C_eps} f(x + z) - f(x)) / (1 + f(x))

The maximum is not computable exactly; two seeded, budgeted maximizers give a lower bound:

- ``pgd`` (default): projected sign-gradient ascent, as for L-infinity adversarial examples:
  start at a uniform random point of the box (seeded), take ``steps`` steps of
  ``z += 0.25 * b * sign(grad)`` with ``b = eps * (|x| + 1)``, clip to the box, and keep the
  highest loss seen. Sign steps suit a box: the maximum of a locally linear loss over a box is at
  the corner ``b * sign(grad)``.
- ``lbfgsb``: Keskar et al.'s own choice: scipy's L-BFGS-B on ``-f(x + z)`` from ``z = 0`` within
  the box bounds, at most ``steps`` iterations (they used 10). It works on ``u = z / b`` in
  ``[-1, 1]^n`` (the same box), because scipy's stopping test on the projected gradient is
  absolute and would end a run in a box of width 1e-7 before its first step.

PGD costs one gradient per step. L-BFGS-B's line searches cost more (about 10 per iteration)
and find less: on a small box around a non-stationary point, where the loss is linear and the
maximum is known (the corner ``b * sign(grad)``), 10 PGD steps reach it while 10 L-BFGS-B
iterations (116 evaluations) reach 69 % of the rise (tests/test_sharpness.py).

References:
    Keskar, Mudigere, Nocedal, Smelyanskiy, Tang (2017), "On Large-Batch Training for Deep
    Learning: Generalization Gap and Sharp Minima", section 2.2.1, eq. (3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lossurf.errors import LossurfError

__all__ = ["SharpnessResult", "eps_sharpness_of", "SHARPNESS_METHODS"]

SHARPNESS_METHODS = ("pgd", "lbfgsb")
#: PGD step as a fraction of the box half-width: 10 steps can cross the box 2.5 times.
PGD_STEP = 0.25

LossGrad = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


@dataclass(frozen=True)
class SharpnessResult:
    """The outcome of :func:`eps_sharpness_of`.

    Attributes:
        sharpness: ``100 * (max_loss - loss) / (1 + loss)`` (a lower bound of the true maximum).
        loss: ``f(x)``.
        max_loss: the highest ``f(x + z)`` found in the box.
        perturbation: the ``z`` that reached it (flat float64).
        eps, steps, method, seed: the request.
        evaluations: loss-and-gradient evaluations spent.
    """

    sharpness: float
    loss: float
    max_loss: float
    perturbation: torch.Tensor
    eps: float
    steps: int
    method: str
    seed: int
    evaluations: int


def check_sharpness(eps: float, steps: int, method: str) -> None:
    """Refuse bad settings of :func:`eps_sharpness_of` (also called before a store is made)."""
    if method not in SHARPNESS_METHODS:
        raise LossurfError(f"unknown sharpness method {method!r}; use one of: {', '.join(SHARPNESS_METHODS)}")
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
        raise LossurfError(f"eps must be a positive number (e.g. 1e-3), got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LossurfError(f"steps must be a positive integer, got {steps!r}")


def eps_sharpness_of(loss_grad: LossGrad, x: torch.Tensor, *, eps: float = 1e-3, steps: int = 10,
                     method: str = "pgd", seed: int = 0) -> SharpnessResult:
    """Epsilon-sharpness of ``f`` at ``x``, given ``loss_grad(theta) -> (f, grad f)``.

    Args:
        loss_grad: the loss and its flat float64 gradient at a flat parameter vector.
        x: the point (flat float64).
        eps: the box's relative half-width (default 1e-3; Keskar et al. report 1e-3 and 5e-4).
        steps: ascent steps (default 10).
        method: ``pgd`` (default) or ``lbfgsb``.
        seed: seeds the PGD start (default 0).

    Returns:
        A :class:`SharpnessResult`.
    """
    check_sharpness(eps, steps, method)
    x = x.detach().double()
    bound = eps * (x.abs() + 1)
    base, _ = loss_grad(x)
    if method == "pgd":
        best, z_best, count = _pgd(loss_grad, x, bound, steps, seed)
    else:
        best, z_best, count = _lbfgsb(loss_grad, x, bound, steps)
    best = max(best, base)  # z = 0 is in the box
    if best == base:
        z_best = torch.zeros_like(x)
    return SharpnessResult(100 * (best - base) / (1 + base), base, best, z_best, float(eps),
                           steps, method, int(seed), count + 1)


def _pgd(loss_grad: LossGrad, x, bound, steps, seed):
    g = torch.Generator().manual_seed(int(seed))
    z = (torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1).to(x.device) * bound
    best, z_best = -np.inf, z
    for _ in range(steps):
        value, grad = loss_grad(x + z)
        if value > best:
            best, z_best = value, z.clone()
        z = torch.clamp(z + PGD_STEP * bound * torch.sign(grad), -bound, bound)
    value, _ = loss_grad(x + z)
    if value > best:
        best, z_best = value, z.clone()
    return best, z_best, steps + 1


def _lbfgsb(loss_grad: LossGrad, x, bound, steps):
    from scipy.optimize import minimize  # scipy comes with scikit-learn

    count = 0
    best = [-np.inf, None]

    b = bound.cpu().numpy()

    def negative(u: np.ndarray):
        nonlocal count
        count += 1
        zt = torch.as_tensor(u * b, dtype=torch.float64, device=x.device)
        value, grad = loss_grad(x + zt)
        if value > best[0]:
            best[0], best[1] = value, zt.clone()
        return -value, -(grad.detach().cpu().numpy() * b)

    minimize(negative, np.zeros_like(b), jac=True, method="L-BFGS-B",
             bounds=[(-1.0, 1.0)] * len(b), options={"maxiter": steps, "gtol": 0.0, "ftol": 0.0})
    return best[0], best[1], count
