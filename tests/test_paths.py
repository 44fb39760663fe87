"""Lines (paper eq. 2) and basin profiles (eq. 1) as affine grids over anchor weights."""

import numpy as np
import pytest
import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.params import as_state, combine, distance, flatten, moving_keys
from lossurf.surface.paths import basin_grid, line_grid


def weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return as_state(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)))


def dense(state) -> np.ndarray:
    return flatten(state, list(state)).numpy()


def test_line_orientation_end_points_are_bitwise_anchors():
    start, end = weights(0), weights(1)
    grid = line_grid(range=(-0.5, 2.0), steps=51)
    alpha = grid.coords["alpha"]
    assert grid.anchors == ("start", "end") and grid.dims == ("alpha",)
    np.testing.assert_allclose(grid.coefficients.sum(-1), np.ones(51), rtol=0, atol=1e-15)
    i0, i1 = int(np.where(alpha == 0.0)[0][0]), int(np.where(alpha == 1.0)[0][0])
    np.testing.assert_array_equal(grid.coefficients[i0], [1.0, 0.0])
    np.testing.assert_array_equal(grid.coefficients[i1], [0.0, 1.0])
    for i, anchor in ((i0, start), (i1, end)):
        point = combine([start, end], grid.coefficients[i])
        assert all(torch.equal(point[k], anchor[k]) for k in anchor)


def test_line_matches_paper_eq2_including_extrapolation():
    start, end = weights(0), weights(1)
    grid = line_grid([-0.5, 0.25, 2.0])
    for alpha, row in zip(grid.coords["alpha"], grid.coefficients):
        # paper eq. 2: theta = alpha*theta1 + (1-alpha)*theta2 with theta1 = end, theta2 = start
        expect = alpha * dense(end) + (1 - alpha) * dense(start)
        np.testing.assert_allclose(dense(combine([start, end], row)), expect, rtol=1e-6, atol=1e-6)


def test_linspace_snaps_to_the_anchors():
    grid = line_grid(range=(-0.3, 1.7), steps=21)  # 0.0 and 1.0 are grid nodes up to rounding
    assert 0.0 in grid.coords["alpha"] and 1.0 in grid.coords["alpha"]


def test_basin_at_init_distance_is_the_init_and_lambda_is_a_distance():
    minimum, init = weights(0), weights(1)
    keys = moving_keys(minimum)
    d = distance(minimum, init, keys)
    grid = basin_grid(d, [-0.5 * d, 0.0, 0.3 * d, d, 2 * d])
    assert grid.anchors == ("minimum", "init") and grid.attrs["init_distance"] == d
    at = {lam: combine([minimum, init], row) for lam, row in zip(grid.coords["lambda"], grid.coefficients)}
    assert all(torch.equal(at[d][k], init[k]) for k in init)
    assert all(torch.equal(at[0.0][k], minimum[k]) for k in minimum)
    # eq. 1 computed densely, and |lambda| is the distance from the minimum
    unit = (dense(init) - dense(minimum)) / np.linalg.norm(dense(init) - dense(minimum))
    for lam, state in at.items():
        np.testing.assert_allclose(dense(state), dense(minimum) + lam * unit, rtol=1e-5, atol=1e-6)
        assert distance(state, minimum, keys) == pytest.approx(abs(lam), rel=1e-5, abs=1e-6)


def test_basin_default_range_spans_below_zero_past_init():
    grid = basin_grid(2.0, steps=41)
    lam = grid.coords["lambda"]
    assert lam[0] == pytest.approx(-1.0) and lam[-1] == pytest.approx(3.0)
    assert 0.0 in lam and 2.0 in lam


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 1}, "at least two steps"),
        ({"range": (0.0, float("inf"))}, "not finite"),
        ({"range": (float("nan"), 1.0)}, "not finite"),
        ({"range": (1.0, 1.0)}, "empty"),
        ({"alphas": [0.5]}, "at least two values"),
        ({"alphas": [0.0, float("nan")]}, "not all finite"),
        ({"alphas": [0.0, 0.0]}, "repeat"),
        ({"range": (2.0, 1.0)}, r"range \(2.0, 1.0\) runs backwards; give low < high, i.e. \(1.0, 2.0\)"),
        ({"steps": 100_000_000_000}, "100,000,000,000 steps are more than the 100,000"),
        ({"alphas": np.linspace(0, 1, 100_001)}, "100,001 values, more than the 100,000"),
    ],
)
def test_line_rejects_bad_ranges(kwargs, message):
    with pytest.raises(LossurfError, match=message):
        line_grid(**kwargs)


def test_basin_rejects_identical_points():
    with pytest.raises(LossurfError, match="two different, finite weight vectors"):
        basin_grid(0.0)


@pytest.mark.parametrize("max_distance", [-1.0, 0.0, float("nan")])
def test_basin_rejects_a_distance_that_is_not_positive(max_distance):
    with pytest.raises(LossurfError, match="max_distance must be a positive distance from the "
                                           "minimum, got .*; the initialization is 2 away"):
        basin_grid(2.0, max_distance=max_distance)


def test_a_plane_of_too_many_points_is_refused_before_it_is_built():
    from lossurf.surface.directions import direction_plane_grid
    from lossurf.surface.plane import barycentric_grid, bilinear_grid

    message = "a plane of 4,000 x 4,000 points is more than the 10,000,000 points"
    for build in (barycentric_grid, bilinear_grid):
        with pytest.raises(LossurfError, match=message):
            build(steps=4000)
    with pytest.raises(LossurfError, match=message):
        direction_plane_grid("random", steps=4000)
    assert barycentric_grid(steps=3000).num_points == 9_000_000
