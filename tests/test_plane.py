"""Bilinear (paper eqs. 3-5), barycentric (eqs. 6-8) and orthonormal affine planes."""

import numpy as np
import pytest
import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.params import as_state, combine, flatten, moving_keys
from lossurf.surface.plane import affine_basis, affine_grid, barycentric_grid, bilinear_grid


def weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return as_state(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))


def dense(state) -> np.ndarray:
    return flatten(state, list(state)).numpy()


def corner_index(grid, alpha, beta):
    return int(np.where(grid.coords["alpha"] == alpha)[0][0]), int(np.where(grid.coords["beta"] == beta)[0][0])


def test_bilinear_corners_are_the_points_and_interior_is_eqs_3_to_5():
    pts = [weights(s) for s in range(4)]
    grid = bilinear_grid(steps=5)
    np.testing.assert_allclose(grid.coefficients.sum(-1), 1.0, rtol=0, atol=1e-15)
    for p, a, b in zip(pts, grid.attrs["corner_alpha"], grid.attrs["corner_beta"]):
        state = combine(pts, grid.coefficients[corner_index(grid, a, b)])
        assert all(torch.equal(state[k], p[k]) for k in p)
    a, b = 0.25, 0.75
    i, j = corner_index(grid, a, b)
    phi = a * dense(pts[0]) + (1 - a) * dense(pts[1])
    varphi = a * dense(pts[2]) + (1 - a) * dense(pts[3])
    np.testing.assert_allclose(dense(combine(pts, grid.coefficients[i, j])), b * phi + (1 - b) * varphi, rtol=1e-6, atol=1e-7)


def test_barycentric_corners_and_interior_follow_eqs_6_to_8():
    pts = [weights(s) for s in range(3)]
    grid = barycentric_grid(steps=5)
    for p, a, b in zip(pts, grid.attrs["corner_alpha"], grid.attrs["corner_beta"]):
        state = combine(pts, grid.coefficients[corner_index(grid, a, b)])
        assert all(torch.equal(state[k], p[k]) for k in p)
    for j in range(5):  # alpha = 0 is theta0 for every beta
        np.testing.assert_array_equal(grid.coefficients[0, j], [1.0, 0.0, 0.0])
    d1, d2 = dense(pts[1]) - dense(pts[0]), dense(pts[2]) - dense(pts[0])
    for a, b in [(0.5, 0.25), (0.75, 1.0)]:
        i, j = corner_index(grid, a, b)
        expect = b * (a * d1 + dense(pts[0])) + (1 - b) * (a * d2 + dense(pts[0]))
        np.testing.assert_allclose(dense(combine(pts, grid.coefficients[i, j])), expect, rtol=1e-6, atol=1e-7)


def test_affine_basis_is_orthonormal_and_anchors_land_at_their_positions():
    pts = [weights(s) for s in range(3)]
    keys = moving_keys(pts[0])
    basis = affine_basis(pts, keys)
    e1, e2 = basis["e1"], basis["e2"]
    assert float(e1 @ e1) == pytest.approx(1.0, abs=1e-12)
    assert float(e2 @ e2) == pytest.approx(1.0, abs=1e-12)
    assert float(e1 @ e2) == pytest.approx(0.0, abs=1e-12)
    p0 = flatten(pts[0], keys)
    for p, x, y in zip(pts, basis["x"], basis["y"]):
        torch.testing.assert_close(p0 + x * e1 + y * e2, flatten(p, keys), rtol=0, atol=1e-6)
    assert basis["x"][1] == pytest.approx(float(torch.linalg.vector_norm(flatten(pts[1], keys) - p0)))


def test_affine_grid_points_are_p0_plus_x_e1_plus_y_e2_with_margins():
    pts = [weights(s) for s in range(3)]
    keys = moving_keys(pts[0])
    basis = affine_basis(pts, keys)
    grid = affine_grid(basis["x"], basis["y"], steps=7, margin=0.2)
    assert grid.attrs["anchor_x"] == basis["x"] and grid.attrs["anchor_y"] == basis["y"]
    x, y = grid.coords["x"], grid.coords["y"]
    width, height = np.ptp(basis["x"]), np.ptp(basis["y"])
    assert x[0] == pytest.approx(min(basis["x"]) - 0.2 * width) and x[-1] == pytest.approx(max(basis["x"]) + 0.2 * width)
    assert y[0] == pytest.approx(-0.2 * height) and y[-1] == pytest.approx(1.2 * height)
    np.testing.assert_allclose(grid.coefficients.sum(-1), 1.0, atol=1e-12)
    p0 = flatten(pts[0], keys)
    for i, j in [(0, 0), (3, 2), (6, 6), (1, 5)]:
        point = flatten(combine(pts, grid.coefficients[i, j]), keys)
        torch.testing.assert_close(point, p0 + x[i] * basis["e1"] + y[j] * basis["e2"], rtol=0, atol=1e-6)


def test_affine_rejects_collinear_and_wrong_count():
    a, b = weights(0), weights(1)
    keys = moving_keys(a)
    middle = combine([a, b], [0.5, 0.5])
    with pytest.raises(LossurfError, match="collinear"):
        affine_basis([a, b, middle], keys)
    with pytest.raises(LossurfError, match="needs 3 points, got 2"):
        affine_basis([a, b], keys)
    with pytest.raises(LossurfError, match="three distinct points"):
        affine_basis([a, a, b], keys)


def test_plane_rejects_one_step():
    with pytest.raises(LossurfError, match="at least two steps"):
        barycentric_grid(steps=1)
