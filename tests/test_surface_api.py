"""The notebook API: line, basin, plane, functional distance on a user's own model."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn
from torch.func import functional_call

from lossurf.data.base import Dataset
from lossurf.errors import LossurfError
from lossurf.params import as_state, distance, moving_keys
from lossurf.surface import basin, distance_along, functional_distance, line, plane
from lossurf.surface.evaluate import EvalData


def make_model(seed: int, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 10)] + ([nn.BatchNorm1d(10)] if bn else []) + [nn.ReLU(), nn.Linear(10, 3)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    data = Dataset("toy", "classification", x[:64], y[:64], x[64:], y[64:], num_classes=3)
    return data, make_model(0), [as_state(make_model(s)) for s in (1, 2, 3, 4)]


def direct(model, state, x, y):
    """Loss, accuracy and softmax of one weight vector, computed directly."""
    with torch.no_grad():
        logits = functional_call(model, state, (x,)).double()
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean()), logits.softmax(1)


def test_line_end_points_reproduce_the_end_point_losses(toy):
    data, model, w = toy
    before = as_state(model)
    before = {k: v.clone() for k, v in before.items()}
    ds = line(model, w[0], w[1], data, range=(-0.5, 2.0), steps=11, bn="interpolate", progress=False)
    assert ds.loss.dims == ("alpha",) and ds.attrs["anchor_labels"] == ["start", "end"]
    assert ds.attrs["data"].startswith("toy/train n=64") and ds.attrs["bn"] == "interpolate"
    for alpha, state in ((0.0, w[0]), (1.0, w[1])):
        loss, acc, _ = direct(model, state, data.train_x, data.train_y)
        assert float(ds.loss.sel(alpha=alpha)) == pytest.approx(loss, rel=1e-5)
        assert float(ds.accuracy.sel(alpha=alpha)) == pytest.approx(acc)
    mid = {k: -0.5 * w[1][k] + 1.5 * w[0][k] for k in w[0]}  # alpha = -0.5 extrapolates
    assert float(ds.loss.sel(alpha=-0.5)) == pytest.approx(direct(model, mid, data.train_x, data.train_y)[0], rel=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not mutated


def test_basin_at_init_distance_is_the_init_loss_and_subset_is_recorded(toy):
    data, model, w = toy
    d = distance(w[0], w[1], moving_keys(model))
    ds = basin(model, w[0], w[1], data, steps=41, split="test", subset=20, bn="interpolate", progress=False)
    assert ds.attrs["geometry_init_distance"] == pytest.approx(d)
    assert d in ds["lambda"].values and 0.0 in ds["lambda"].values
    assert "toy/test n=20 of 32 (seeded subset, seed=0)" in ds.attrs["data"]
    sub = EvalData.from_dataset(data, split="test", subset=20, seed=0)
    for lam, state in ((d, w[1]), (0.0, w[0])):
        assert float(ds.loss.sel({"lambda": lam})) == pytest.approx(direct(model, state, sub.x, sub.y)[0], rel=1e-5)


@pytest.mark.parametrize("kind, count", [("barycentric", 3), ("bilinear", 4)])
def test_plane_corners_reproduce_the_points(toy, kind, count):
    data, model, w = toy
    ds = plane(model, w[:count], data, kind=kind, steps=5, bn="interpolate", progress=False)
    assert ds.loss.dims == ("alpha", "beta") and ds.loss.shape == (5, 5)
    for p, a, b in zip(w, ds.attrs["geometry_corner_alpha"], ds.attrs["geometry_corner_beta"]):
        expect = direct(model, p, data.train_x, data.train_y)[0]
        assert float(ds.loss.sel(alpha=a, beta=b)) == pytest.approx(expect, rel=1e-5)


def test_affine_plane_records_anchor_positions_and_resumes_from_store(toy, tmp_path):
    data, model, w = toy
    path = tmp_path / "affine.zarr"
    ds = plane(model, w[:3], data, kind="affine", steps=6, margin=0.2, bn="interpolate", store=path, progress=False)
    assert ds.loss.dims == ("x", "y")
    ax, ay = ds.attrs["geometry_anchor_x"], ds.attrs["geometry_anchor_y"]
    assert ax[1] == pytest.approx(distance(w[0], w[1], moving_keys(model)))
    assert ds.x.values[0] < min(ax) and ds.x.values[-1] > max(ax) and ds.y.values[-1] > max(ay)
    xr.testing.assert_identical(xr.open_zarr(path).drop_vars("computed").load(), ds)
    again = plane(model, w[:3], data, kind="affine", steps=6, margin=0.2, bn="interpolate", store=path, progress=False)
    xr.testing.assert_identical(again, ds)


def test_functional_distance_matches_eq_4_1(toy):
    data, model, w = toy
    out = functional_distance(model, w[0], w[1], data, bn="interpolate")
    _, _, pa = direct(model, w[0], data.test_x, data.test_y)
    _, _, pb = direct(model, w[1], data.test_x, data.test_y)
    assert out["fdist"] == pytest.approx(float((pa - pb).pow(2).sum(1).mean().sqrt()), rel=1e-5)
    assert out["disagreement"] == pytest.approx(float((pa.argmax(1) != pb.argmax(1)).double().mean()))
    for key, probs in (("accuracy_a", pa), ("accuracy_b", pb)):
        assert out[key] == pytest.approx(float((probs.argmax(1) == data.test_y).double().mean()))
    assert functional_distance(model, w[0], w[0], data, bn="interpolate")["fdist"] == pytest.approx(0.0, abs=1e-6)


def test_distance_along_starts_at_zero_and_ends_at_the_pairwise_distance(toy):
    data, model, w = toy
    ds = distance_along(model, w[0], w[0], w[1], data, steps=5, bn="interpolate", progress=False)
    assert {"loss", "accuracy", "fdist", "disagreement"} <= set(ds.data_vars)
    assert float(ds.fdist.sel(alpha=0.0)) == pytest.approx(0.0, abs=1e-6)
    pair = functional_distance(model, w[0], w[1], data, bn="interpolate")
    assert float(ds.fdist.sel(alpha=1.0)) == pytest.approx(pair["fdist"], rel=1e-5)


def test_bn_model_with_recompute_runs_on_eval_data(toy):
    data, _, _ = toy
    model = make_model(0, bn=True)
    w = [as_state(make_model(s, bn=True)) for s in (1, 2)]
    ed = EvalData(x=data.test_x, y=data.test_y, task="classification", bn_x=data.train_x)
    ds = line(model, w[0], w[1], ed, steps=3, progress=False)
    assert ds.attrs["bn"] == "recompute" and ds.attrs["data"].startswith("custom n=32")
    assert np.isfinite(ds.loss.values).all()


def test_user_errors_have_clear_messages(toy):
    data, model, w = toy
    other = as_state(nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4)))
    with pytest.raises(LossurfError, match=r"the model and end are different architectures: key '2.weight'"):
        line(model, w[0], other, data, progress=False)
    with pytest.raises(LossurfError, match="at least two steps"):
        line(model, w[0], w[1], data, steps=1, progress=False)
    with pytest.raises(LossurfError, match="not finite"):
        line(model, w[0], w[1], data, range=(0.0, float("nan")), progress=False)
    with pytest.raises(LossurfError, match="a bilinear plane needs exactly 4 points, got 3"):
        plane(model, w[:3], data, kind="bilinear", progress=False)
    with pytest.raises(LossurfError, match=r"unknown plane kind 'square'; choose one of \['affine', 'barycentric', 'bilinear'\]"):
        plane(model, w[:3], data, kind="square", progress=False)
    with pytest.raises(LossurfError, match="data must be a lossurf EvalData or a lossurf.data.Dataset"):
        line(model, w[0], w[1], (data.test_x, data.test_y), progress=False)
    with pytest.raises(LossurfError, match="subset must be at least 1"):
        line(model, w[0], w[1], data, subset=0, progress=False)
    with pytest.raises(LossurfError, match="two different, finite weight vectors"):
        basin(model, w[0], w[0], data, progress=False)
