"""Epsilon-sharpness against a brute-force maximum over the box and its first-order closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.hessian.hvp import HessianOperator
from lossurf.hessian.sharpness import eps_sharpness_of
from lossurf.surface.evaluate import EvalData


def _two_weight_problem():
    torch.manual_seed(0)
    model = nn.Linear(1, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.8], [-0.3]]))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 1, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(64, generator=g, dtype=torch.float64) > 0).long()
    return HessianOperator(model, model.state_dict(), EvalData(x, y, "classification"))


@pytest.mark.parametrize("method", ["pgd", "lbfgsb"])
def test_two_weight_box_maximum_matches_a_grid_search(method):
    op = _two_weight_problem()
    eps = 0.2
    result = eps_sharpness_of(op.gradient, op.theta, eps=eps, steps=20, method=method)
    bound = eps * (op.theta.abs() + 1)
    # brute force: the loss on a 51 x 51 grid over the box, corners included (softmax
    # regression's loss is convex in the weights, so its maximum over a box is at a corner)
    a = torch.linspace(-1, 1, 51, dtype=torch.float64)
    best = max(op.loss(op.theta + torch.stack([u * bound[0], w * bound[1]])) for u in a for w in a)
    f0 = op.loss()
    expected = 100 * (best - f0) / (1 + f0)
    assert expected > 1.0  # the box is large enough to matter
    assert result.sharpness == pytest.approx(expected, rel=1e-6)
    assert torch.all(result.perturbation.abs() <= bound * (1 + 1e-12))
    assert result.loss == pytest.approx(f0) and result.evaluations >= 2


def test_small_box_follows_the_first_order_closed_form():
    # For small eps the loss is linear in the box: the maximum is at the corner b * sign(grad),
    # so sharpness = 100 * sum_i |g_i| * eps * (|x_i| + 1) / (1 + f(x)).
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(2)
    data = EvalData(torch.randn(40, 5, generator=g, dtype=torch.float64),
                    torch.randint(0, 3, (40,), generator=g), "classification")
    op = HessianOperator(model, model.state_dict(), data)
    f0, grad = op.gradient()
    eps = 1e-7
    expected = 100 * float((grad.abs() * eps * (op.theta.abs() + 1)).sum()) / (1 + f0)
    pgd = eps_sharpness_of(op.gradient, op.theta, eps=eps, steps=10, method="pgd", seed=3)
    assert pgd.sharpness == pytest.approx(expected, rel=1e-4)
    assert pgd.evaluations == 12  # f(x), 10 steps, the last point
    # L-BFGS-B (Keskar et al.'s maximizer) is a weaker lower bound on the same budget
    lbfgsb = eps_sharpness_of(op.gradient, op.theta, eps=eps, steps=10, method="lbfgsb")
    assert 0.5 * expected < lbfgsb.sharpness <= expected * (1 + 1e-6)


def test_bad_sharpness_requests_are_named():
    op = _two_weight_problem()
    with pytest.raises(LossurfError, match="unknown sharpness method 'adam'"):
        eps_sharpness_of(op.gradient, op.theta, method="adam")
    with pytest.raises(LossurfError, match="eps must be a positive number"):
        eps_sharpness_of(op.gradient, op.theta, eps=-1)
    with pytest.raises(LossurfError, match="steps must be a positive integer"):
        eps_sharpness_of(op.gradient, op.theta, steps=0)
