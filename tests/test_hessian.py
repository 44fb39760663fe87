"""Hessian-vector products, Lanczos, Hutchinson and SLQ against a dense Hessian (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossurf.errors import LossurfError
from lossurf.hessian.density import density_grid, slq, spectral_density
from lossurf.hessian.hvp import HessianOperator
from lossurf.hessian.lanczos import lanczos_top, lanczos_tridiagonal
from lossurf.hessian.trace import hutchinson
from _hessian_models import tiny_data, dense_hessian, tiny_model


@pytest.fixture(scope="module", params=[False, True], ids=["mlp", "mlp-bn"])
def problem(request):
    model = tiny_model(request.param)
    data = tiny_data()
    h, loss, grad = dense_hessian(model, data)
    return model, data, h, loss, grad


@pytest.mark.parametrize(("method", "cache"), [("forward-over-reverse", None),
                                               ("double-backward", False), ("double-backward", True)])
def test_hvp_gradient_and_loss_match_the_dense_hessian(problem, method, cache):
    model, data, h, loss, grad = problem
    # batches of 32 over 90 examples: the accumulation must weight the short last batch
    op = HessianOperator(model, model.state_dict(), data, batch_size=32, method=method,
                         cache_graph=cache)
    assert op.cache_graph is bool(cache)
    assert op.n == h.shape[0] and 100 < op.n < 400
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(op.n, generator=g, dtype=torch.float64)
        torch.testing.assert_close(op.hvp(v), h @ v, rtol=1e-10, atol=1e-12)
    value, gradient = op.gradient()
    assert value == pytest.approx(float(loss), rel=1e-12)
    assert op.loss() == pytest.approx(float(loss), rel=1e-12)
    torch.testing.assert_close(gradient, grad, rtol=1e-10, atol=1e-13)
    assert op.calls == 3


def test_lanczos_top_eigenpairs_match_eigh(problem):
    model, data, h, _, _ = problem
    op = HessianOperator(model, model.state_dict(), data, batch_size=45)
    result = lanczos_top(op.hvp, op.n, k=5, tol=1e-8, max_iter=op.n, seed=0)
    evals, evecs = torch.linalg.eigh(h)
    expected = evals.flip(0)[:5].numpy()
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=1e-6)
    assert result.converged and result.iterations < op.n
    assert np.all(result.residuals <= 1e-8 * np.abs(result.eigenvalues))
    for i in range(5):  # eigenvectors up to sign
        cosine = abs(float(result.eigenvectors[i] @ evecs[:, -1 - i]))
        assert cosine == pytest.approx(1.0, abs=1e-6)


def test_lanczos_finds_repeated_and_exact_eigenvalues_of_a_small_matrix():
    # A matrix with a repeated top eigenvalue: one Krylov space sees it once, so the run breaks
    # down and must restart from an orthogonal direction to find the second copy.
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    values = torch.cat([torch.tensor([5.0, 5.0, 3.0]), torch.linspace(-1, 1, 27, dtype=torch.float64)])
    a = q @ torch.diag(values) @ q.T
    result = lanczos_top(lambda v: a @ v, 30, k=3, tol=1e-10, max_iter=30)
    np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0, 3.0], rtol=1e-9)


def test_hutchinson_is_exact_on_the_basis_and_unbiased_with_rademacher_probes(problem):
    model, data, h, _, _ = problem
    op = HessianOperator(model, model.state_dict(), data)
    exact = float(torch.trace(h))
    basis = hutchinson(op.hvp, op.n, probes=torch.eye(op.n, dtype=torch.float64))
    assert basis.estimate == pytest.approx(exact, rel=1e-10)
    # Rademacher probes on the dense matrix (cheap): the standard error matches the closed form
    # sqrt(2 sum_{i != j} H_ij^2 / s) and the estimate lies within a few standard errors.
    s = 4000
    result = hutchinson(lambda v: h @ v, op.n, tol=1e-12, min_samples=s, max_samples=s, seed=5)
    off = float((h.square().sum() - h.diagonal().square().sum()))
    assert result.stderr == pytest.approx(np.sqrt(2 * off / s), rel=0.1)
    assert abs(result.estimate - exact) <= 4 * result.stderr
    assert len(result.samples) == s and not result.converged


def test_hutchinson_stops_at_its_tolerance():
    a = torch.diag(torch.linspace(1, 2, 50, dtype=torch.float64)) + 0.01
    result = hutchinson(lambda v: a @ v, 50, tol=0.05, min_samples=5, max_samples=500, seed=1)
    assert result.converged and 5 <= len(result.samples) < 500
    assert result.stderr <= 0.05 * abs(result.estimate)


def test_slq_quadrature_is_exact_for_low_moments_and_the_density_integrates_to_n(problem):
    model, data, h, _, _ = problem
    op = HessianOperator(model, model.state_dict(), data)
    # Gauss quadrature from m Lanczos steps: sum_j tau_j theta_j^p = v^T H^p v for p < 2m.
    v = torch.randn(op.n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = v / v.norm()
    m = 6
    alpha, beta, _ = lanczos_tridiagonal(op.hvp, v, m)
    t = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    theta, s = np.linalg.eigh(t)
    tau = s[0] ** 2
    w = v.clone()
    for p in range(2 * m):
        assert float(tau @ theta**p) == pytest.approx(float(v @ w), rel=1e-8, abs=1e-14)
        w = h @ w
    quad = slq(op.hvp, op.n, probes=3, steps=40, seed=0)
    np.testing.assert_allclose(quad.weights.sum(1), 1.0, rtol=1e-12)
    grid, sigma = density_grid(quad, sigma=0.01, points=2001)
    dens = spectral_density(quad, grid, sigma, op.n)
    assert np.trapezoid(dens, grid) == pytest.approx(op.n, rel=1e-6)
    # its mean is the SLQ trace estimate; its support covers the extreme eigenvalues
    evals = torch.linalg.eigvalsh(h).numpy()
    assert grid[0] < evals[0] and grid[-1] > evals[-1]
    mean = np.trapezoid(grid * dens, grid)
    per_probe = (quad.nodes * quad.weights).sum(1) * op.n
    assert mean == pytest.approx(per_probe.mean(), rel=1e-6)


def test_bad_input_is_named():
    model, data = tiny_model(), tiny_data()
    with pytest.raises(LossurfError, match="unknown HVP method 'magic'"):
        HessianOperator(model, model.state_dict(), data, method="magic")
    with pytest.raises(LossurfError, match="must be an EvalData"):
        HessianOperator(model, model.state_dict(), (data.x, data.y))
    with pytest.raises(LossurfError, match="batch_size must be a positive integer"):
        HessianOperator(model, model.state_dict(), data, batch_size=0)
    with pytest.raises(LossurfError, match="different architectures"):
        HessianOperator(model, tiny_model(True).state_dict(), data)
    op = HessianOperator(model, model.state_dict(), data)
    with pytest.raises(LossurfError, match="k must be an integer from 1"):
        lanczos_top(op.hvp, op.n, k=0)
    with pytest.raises(LossurfError, match="tol must be"):
        lanczos_top(op.hvp, op.n, k=1, tol=0)
    with pytest.raises(LossurfError, match="flat vector of"):
        op.hvp(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(LossurfError, match="max_samples"):
        hutchinson(op.hvp, op.n, min_samples=10, max_samples=5)
