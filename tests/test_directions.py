"""Random directions (Li et al. filter normalization) and the surfaces around one end point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from torch.func import functional_call

from lossurf import surface
from lossurf.errors import LossurfError
from lossurf.params import moving_keys
from lossurf.surface.direction_store import directions_path, load_directions
from lossurf.surface.directions import direction_plane_grid, normalize_direction
from lossurf.surface.evaluate import EvalData

from _surface_models import TinyBNCNN


class ConvNet(nn.Module):
    """Conv and linear weights with biases, and batch norm (weight, bias, running stats)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = ConvNet()
    with torch.no_grad():  # give BN parameters values that differ from their defaults
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.normal_()
    return model


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    return EvalData(x=x, y=y, task="classification", bn_x=x)


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.double().reshape(t.shape[0], -1).norm(dim=1)


def test_filter_normalized_direction_has_each_filters_norm(net):
    state = net.state_dict()
    (d,) = surface.random_directions(net, state, seed=3, count=1)
    assert set(d) == set(moving_keys(net))  # parameters only: no running statistics
    for key in ("conv.weight", "fc.weight"):
        w, dk = state[key], d[key]
        assert dk.shape == w.shape and dk.dtype == w.dtype
        np.testing.assert_allclose(_filter_norms(dk), _filter_norms(w), rtol=1e-6)
    for key in ("conv.bias", "bn.weight", "bn.bias", "fc.bias"):  # Li et al.'s ignore='biasbn'
        assert torch.count_nonzero(d[key]) == 0


def test_kept_biases_are_normalized_as_one_filter_and_layer_and_none(net):
    state = net.state_dict()
    (kept,) = surface.random_directions(net, state, seed=3, count=1, bias_bn="keep")
    for key in ("conv.bias", "bn.weight", "bn.bias", "fc.bias"):
        assert float(kept[key].double().norm()) == pytest.approx(float(state[key].double().norm()), rel=1e-6)
    (layer,) = surface.random_directions(net, state, seed=3, count=1, normalization="layer")
    for key in ("conv.weight", "fc.weight"):
        assert float(layer[key].double().norm()) == pytest.approx(float(state[key].double().norm()), rel=1e-6)
        # layer-wise keeps the Gaussian's own filter proportions (not each filter's norm)
        assert not torch.allclose(_filter_norms(layer[key]), _filter_norms(state[key]), rtol=1e-3)
    (raw,) = surface.random_directions(net, state, seed=3, count=1, normalization="none")
    g = torch.Generator().manual_seed(3)
    for key in moving_keys(net):  # unnormalized: the seeded N(0, 1) draw, key by key
        draw = torch.randn(tuple(state[key].shape), generator=g, dtype=torch.float64)
        expected = torch.zeros_like(draw) if state[key].dim() <= 1 else draw
        torch.testing.assert_close(raw[key], expected.float())
    # filter normalization of the same draw is that draw with each row rescaled
    assert torch.allclose(normalize_direction(raw["fc.weight"], state["fc.weight"]).float(),
                          surface.random_directions(net, state, seed=3, count=1)[0]["fc.weight"])


def test_directions_are_seeded_and_the_line_uses_the_planes_first(net):
    state = net.state_dict()
    a = surface.random_directions(net, state, seed=7)
    b = surface.random_directions(net, state, seed=7)
    c = surface.random_directions(net, state, seed=8)
    for key in a[0]:
        assert torch.equal(a[0][key], b[0][key]) and torch.equal(a[1][key], b[1][key])
    assert not torch.equal(a[0]["fc.weight"], c[0]["fc.weight"])
    assert not torch.equal(a[0]["fc.weight"], a[1]["fc.weight"])
    (line,) = surface.random_directions(net, state, seed=7, count=1)
    assert all(torch.equal(line[k], a[0][k]) for k in line)


def test_zero_filter_gets_a_zero_direction():
    w = torch.zeros(2, 3)
    w[1] = torch.tensor([3.0, 4.0, 0.0])
    d = normalize_direction(torch.ones(2, 3), w)
    assert torch.equal(d[0], torch.zeros(3, dtype=torch.float64))
    assert float(d[1].norm()) == pytest.approx(5.0)


def _naive(model, state, x, y, d1, d2, a, b):
    """Loss at state + a*d1 + b*d2 in eval mode (stored BN statistics), one functional call."""
    point = dict(state)
    for k in d1:
        point[k] = (state[k].double() + a * d1[k].double() + b * d2[k].double()).float()
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(functional_call(model, point, (x,)), y).item()


def test_random_plane_matches_a_naive_loop_and_the_center_is_the_end_point(net, data):
    state = {k: v.clone() for k, v in net.state_dict().items()}
    ds = surface.random_plane(net, state, data, steps=5, span=0.5, seed=2, bn="interpolate",
                              progress=False)
    assert ds.loss.dims == ("alpha", "beta")
    assert ds.attrs["lossurf_kind"] == "random"
    assert ds.attrs["direction_normalization"] == "filter" and ds.attrs["direction_seed"] == 2
    d1, d2 = surface.random_directions(net, state, seed=2)
    assert float(ds.loss.sel(alpha=0.0, beta=0.0)) == pytest.approx(
        _naive(net, state, data.x, data.y, d1, d2, 0.0, 0.0), rel=1e-6)
    for a, b in ((0.5, -0.25), (-0.5, 0.5), (0.25, 0.0)):
        assert float(ds.loss.sel(alpha=a, beta=b)) == pytest.approx(
            _naive(net, state, data.x, data.y, d1, d2, a, b), rel=1e-5)


def test_random_line_and_layer_normalization(net, data):
    state = net.state_dict()
    ds = surface.random_line(net, state, data, steps=5, span=1.0, seed=4, bn="interpolate",
                             normalization="layer", progress=False)
    assert ds.loss.dims == ("alpha",)
    (d1,) = surface.random_directions(net, state, seed=4, count=1, normalization="layer")
    zero = {k: torch.zeros_like(v) for k, v in d1.items()}
    for a in (-1.0, 0.0, 0.5):
        assert float(ds.loss.sel(alpha=a)) == pytest.approx(
            _naive(net, state, data.x, data.y, d1, zero, a, 0.0), rel=1e-5)


def test_plane_store_keeps_directions_resumes_and_refuses_another_seed(net, data, tmp_path):
    state = net.state_dict()
    store = tmp_path / "random.zarr"
    first = surface.random_plane(net, state, data, steps=4, seed=5, store=store, progress=False)
    stored = load_directions(store)
    d1, d2 = surface.random_directions(net, state, seed=5)
    assert all(torch.equal(stored["d1"][k], d1[k]) and torch.equal(stored["d2"][k], d2[k]) for k in d1)
    assert stored["request"]["seed"] == 5
    assert xr.open_zarr(store).attrs["directions_sha256"] == first.attrs["directions_sha256"]
    # kill half way: forget the second half of the computed mask, rerun, same values
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    group["computed"][2:] = False
    group["loss"][2:] = np.nan
    again = surface.random_plane(net, state, data, steps=4, seed=5, store=store, progress=False)
    np.testing.assert_array_equal(again.loss.values, first.loss.values)
    with pytest.raises(LossurfError, match="different request.*seed"):
        surface.random_plane(net, state, data, steps=4, seed=6, store=store, progress=False)


def test_directions_file_that_differs_from_its_request_is_refused(net, data, tmp_path):
    store = tmp_path / "r.zarr"
    surface.random_line(net, net.state_dict(), data, steps=3, store=store, progress=False)
    directions_path(store).write_bytes(b"garbage")
    with pytest.raises(LossurfError, match="damaged.*delete it"):
        surface.random_line(net, net.state_dict(), data, steps=3, store=store, progress=False)


def test_bn_model_recomputes_statistics_around_the_center():
    torch.manual_seed(0)
    model = TinyBNCNN()
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 5, (32,))
    data = EvalData(x=x, y=y, task="classification", bn_x=x)
    ds = surface.random_plane(model, model.state_dict(), data, steps=3, progress=False)
    assert np.isfinite(ds.loss.values).all()
    assert ds.attrs["bn"] == "recompute"


@pytest.mark.parametrize("kwargs, message", [
    ({"normalization": "unit"}, "unknown normalization 'unit'; choose one of filter, layer, none"),
    ({"bias_bn": "drop"}, "unknown bias_bn 'drop'; choose one of zero, keep"),
    ({"span": 0.0}, "span must be a positive"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"steps": 1}, "alpha needs at least two steps"),
])
def test_bad_options_have_one_line_messages(net, data, kwargs, message):
    with pytest.raises(LossurfError, match=message):
        surface.random_plane(net, net.state_dict(), data, progress=False, **kwargs)


def test_seed_outside_random_directions_is_refused(net, data):
    with pytest.raises(LossurfError, match="data_seed="):
        surface.hessian_plane(net, net.state_dict(), data, seed=1, progress=False)


def test_weights_of_another_architecture_are_refused(net, data):
    other = nn.Linear(3, 3).state_dict()
    with pytest.raises(LossurfError, match="different architectures"):
        surface.random_plane(net, other, data, progress=False)


def test_plane_grid_coefficients_reproduce_scaled_anchors():
    grid = direction_plane_grid("pca", [-1.0, 0.0, 2.0], [0.0, 3.0], scales=(2.0, 4.0), dims=("x", "y"))
    coef = grid.coefficients
    # theta + x*d1 + y*d2 == c0*theta + c1*(theta + 2 d1) + c2*(theta + 4 d2)
    np.testing.assert_allclose(coef.sum(-1), 1.0)
    np.testing.assert_allclose(coef[..., 1] * 2.0, np.broadcast_to([[-1.0], [0.0], [2.0]], (3, 2)))
    np.testing.assert_allclose(coef[..., 2] * 4.0, np.broadcast_to([[0.0, 3.0]], (3, 2)))
    with pytest.raises(LossurfError, match="scales must be positive"):
        direction_plane_grid("pca", scales=(0.0, 1.0))
