"""The public surface API on inputs a user gets wrong (or right in an unusual way): one
LossurfError that names the problem and the fix, or the right numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _surface_models import combine, naive_logits
from torch import nn

from lossurf import surface
from lossurf.errors import LossurfError
from lossurf.surface.evaluate import EvalData, Evaluator


class Scaled(nn.Module):
    """Logits times a floating-point buffer that is not a BN statistic."""

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.f = nn.Linear(20, 2)
        self.bn = nn.BatchNorm1d(2) if bn else nn.Identity()
        self.register_buffer("scale", torch.ones(2))
        self.register_buffer("steps", torch.tensor(3))  # an integer buffer stays anchor 0's

    def forward(self, x):
        return self.bn(self.f(x)) * self.scale


class OnlyBuffers(nn.Module):
    """No parameters at all: the weights are a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(20, 2))

    def forward(self, x):
        return x @ self.w


def _data(n: int = 24) -> EvalData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g)
    return EvalData(x, (x[:, 0] > 0).long(), "classification", torch.randn(16, 20, generator=g))


def _naive_line(model, start, end, data, alphas, policy):
    out = []
    for a in alphas:
        state = combine([start, end], (1.0 - a, a), policy)
        logits = naive_logits(model, state, data.x, policy, data.bn_x, bn_batch=8, batch=8)
        out.append(F.cross_entropy(logits, data.y).item())
    return np.array(out)


# 1. floating buffers that are not BN statistics move with the weights


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("policy", ["recompute", "interpolate", "batch"])
def test_float_buffers_are_interpolated_like_parameters(strategy, policy):
    torch.manual_seed(0)
    model = Scaled(bn=True)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    end = dict(start, scale=torch.tensor([5.0, -5.0]), **{"f.bias": start["f.bias"] + 1})
    if policy == "interpolate":
        end["bn.running_mean"] = start["bn.running_mean"] + 0.5
    data = _data()
    ds = surface.line(model, start, end, data, steps=3, bn=policy, strategy=strategy,
                      bn_batch_size=8, batch_size=8, compile=False, progress=False)
    naive = _naive_line(model, start, end, data, ds.alpha.values, policy)
    np.testing.assert_allclose(ds.loss.values, naive, rtol=1e-5, atol=1e-6)
    assert ds.loss.values[-1] != pytest.approx(ds.loss.values[0])


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_a_model_of_buffers_only_is_not_a_flat_line(strategy):
    torch.manual_seed(0)
    model = OnlyBuffers()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    end = {"w": torch.randn(20, 2)}
    data = _data()
    ds = surface.line(model, start, end, data, steps=3, strategy=strategy, progress=False)
    naive = _naive_line(model, start, end, data, ds.alpha.values, "recompute")
    np.testing.assert_allclose(ds.loss.values, naive, rtol=1e-5, atol=1e-6)


def test_a_non_persistent_buffer_keeps_the_model_value():
    class NonPersistent(Scaled):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("shift", torch.full((2,), 0.25), persistent=False)

        def forward(self, x):
            return super().forward(x) + self.shift

    torch.manual_seed(0)
    model = NonPersistent()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    end = dict(start, scale=torch.tensor([2.0, 0.5]))
    data = _data()
    got = Evaluator(model, data, strategy="loop").evaluate([start, end], np.array([[0.5, 0.5]]))
    naive = _naive_line(model, start, end, data, [0.5], "recompute")
    np.testing.assert_allclose(got["loss"], naive, rtol=1e-5)


# 2. targets the cross-entropy cannot take


def _line(model, data, **kw):
    start = {k: v.clone() for k, v in model.state_dict().items()}
    end = {k: v + 0.1 if v.is_floating_point() else v for k, v in start.items()}
    return surface.line(model, start, end, data, steps=2, progress=False, **kw)


def _two_class() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("shift,found", [(5, "5 to 6"), (-1, "-1 to 0"), (-100, "-100 to -99")])
@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_class_ids_outside_the_outputs_are_refused_once(shift, found, strategy):
    data = _data()
    bad = EvalData(data.x, data.y + shift, "classification", data.bn_x)
    with pytest.raises(LossurfError, match=f"class ids {found}.* 2 outputs"):
        _line(_two_class(), bad, strategy=strategy)
    with pytest.raises(LossurfError, match=f"class ids {found}"):
        Evaluator(_two_class(), bad, strategy=strategy)  # when the evaluator is built


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int16])
def test_narrow_integer_or_bool_targets_are_refused(dtype):
    data = _data()
    with pytest.raises(LossurfError, match=r"y\.long\(\)"):
        EvalData(data.x, data.y.to(dtype), "classification")


def test_one_hot_targets_are_refused_with_argmax():
    data = _data()
    with pytest.raises(LossurfError, match=r"one-hot.*y\.argmax\(1\)"):
        EvalData(data.x, F.one_hot(data.y, 2).float(), "classification")


# 3. inputs of another dtype or shape than the model takes


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_float64_inputs_are_converted_to_the_model_dtype(strategy):
    data = _data()
    wide = EvalData(data.x.double(), data.y, "classification", data.bn_x.double())
    model = _bn_model()
    ev = Evaluator(model, wide, strategy=strategy, bn_batch_size=8)
    assert ev.x.dtype == torch.float32 and ev.bn_x.dtype == torch.float32
    assert any("float64" in n for n in ev.notes)
    got, expected = _line(model, wide, strategy=strategy), _line(model, data, strategy=strategy)
    np.testing.assert_array_equal(got.loss.values, expected.loss.values)


def test_integer_inputs_for_a_float_model_are_refused_with_the_dtype():
    data = _data()
    bad = EvalData((data.x * 10).long(), data.y, "classification")
    with pytest.raises(LossurfError, match=r"torch\.int64.*x\.float\(\)"):
        _line(_two_class(), bad)


def test_wrong_feature_count_is_one_error_naming_shapes(capfd):
    data = _data()
    bad = EvalData(data.x[:, :19], data.y, "classification", data.bn_x[:, :19])
    with pytest.raises(LossurfError, match=r"shape \(24, 19\).*Linear.*20 features") as info:
        _line(_bn_model(), bad, strategy="loop")
    assert "mat1 and mat2" in str(info.value)  # the original reason
    assert "Traceback" not in capfd.readouterr().err


def test_wrong_channel_count_names_the_convolution():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    data = EvalData(torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 0, 1]), "classification")
    with pytest.raises(LossurfError, match=r"shape \(4, 1, 6, 6\).*Conv2d.*3 input channels"):
        _line(model, data)


def test_bn_x_must_be_a_tensor_of_the_example_shape():
    data = _data()
    with pytest.raises(LossurfError, match="bn_x.*torch.as_tensor"):
        EvalData(data.x, data.y, "classification", data.bn_x.numpy())
    with pytest.raises(LossurfError, match=r"bn_x.*\(19,\).*\(20,\)"):
        EvalData(data.x, data.y, "classification", data.bn_x[:, :19])


# 4. devices this machine does not have


@pytest.mark.parametrize("device,match", [
    ("gpu", "unknown device 'gpu'"), (0, "unknown device 0"), ("cuda:x", "unknown device"),
    pytest.param("cuda", "'cuda' is not available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a GPU is here")),
    pytest.param(torch.device("cuda", 0), "'cuda:0' is not available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a GPU is here")),
    pytest.param("mps", "'mps' is not available", marks=pytest.mark.skipif(
        torch.backends.mps.is_available(), reason="an Apple GPU is here")),
])
def test_unavailable_or_unknown_devices_are_refused(device, match):
    with pytest.raises(LossurfError, match=match) as info:
        _line(_two_class(), _data(), device=device)
    assert "--device" not in str(info.value)  # an API call has no flags
    with pytest.raises(LossurfError, match=match):
        Evaluator(_two_class(), _data(), device=device)


def test_cpu_devices_are_accepted():
    for device in ("cpu", " CPU ", torch.device("cpu")):
        assert Evaluator(_two_class(), _data(), device=device).device == torch.device("cpu")


# 5. subset and split where they cannot apply, and unknown splits


def _dataset():
    from lossurf.data.base import Dataset

    d = _data(32)
    return Dataset("toy", "classification", d.x[:24], d.y[:24], d.x[24:], d.y[24:], num_classes=2)


def test_subset_and_split_are_refused_with_an_eval_data():
    data = _data()
    with pytest.raises(LossurfError, match="EvalData holds the examples.*pass the dataset and subset="):
        _line(_two_class(), data, subset=10)
    with pytest.raises(LossurfError, match="split='test'.*EvalData"):
        _line(_two_class(), data, split="test")
    with pytest.raises(LossurfError, match="subset="):
        surface.eval_data(data, subset=np.int64(10))
    # the defaults pass (functional distance defaults to the test split of a Dataset)
    model = _two_class()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    end = {k: v + 0.1 for k, v in start.items()}
    assert set(surface.functional_distance(model, start, end, data)) == {
        "fdist", "disagreement", "accuracy_a", "accuracy_b"}
    ds = surface.distance_along(model, start, start, end, data, steps=2, progress=False)
    assert "fdist" in ds


def test_split_is_refused_for_batches():
    d = _data()
    with pytest.raises(LossurfError, match="split='test'.*loader"):
        _line(_two_class(), [(d.x, d.y)], split="test")


@pytest.mark.parametrize("split", ["val", "TEST", 1])
def test_an_unknown_split_is_refused_everywhere(split):
    for data in (_dataset(), _data(), [(_data().x, _data().y)]):
        with pytest.raises(LossurfError, match="unknown split"):
            _line(_two_class(), data, split=split)
    with pytest.raises(LossurfError, match="unknown split"):
        surface.functional_distance(_two_class(), *[_two_class().state_dict()] * 2, _dataset(),
                                    split=split)


def test_functional_distance_defaults_to_the_test_split_of_a_dataset():
    model, data = _two_class(), _dataset()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v + 0.1 for k, v in a.items()}
    assert surface.functional_distance(model, a, b, data) == surface.functional_distance(
        model, a, b, data, split="test")


# 6. arguments of the wrong type


def _weights():
    model = _two_class()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    return model, start, {k: v + 0.1 for k, v in start.items()}


@pytest.mark.parametrize("value,match", [
    ((0, 1, 2), r"range must be two numbers \(low, high\), got \(0, 1, 2\)"),
    (1.0, r"range must be two numbers \(low, high\), got 1.0"),
    (("a", "b"), r"range must be two numbers \(low, high\), got \('a', 'b'\)"),
    ("01", r"range must be two numbers"),
])
def test_a_malformed_range_is_refused(value, match):
    model, a, b = _weights()
    with pytest.raises(LossurfError, match=match):
        surface.line(model, a, b, _data(), range=value, progress=False)


def test_malformed_alphas_are_refused():
    model, a, b = _weights()
    with pytest.raises(LossurfError, match=r"alpha values must be numbers, got \['a', 'b'\]"):
        surface.line(model, a, b, _data(), alphas=["a", "b"], progress=False)


@pytest.mark.parametrize("steps", [3.0, "3", True])
def test_steps_must_be_an_integer(steps):
    model, a, b = _weights()
    with pytest.raises(LossurfError, match=f"steps must be a whole number.*got {steps!r}"):
        surface.line(model, a, b, _data(), steps=steps, progress=False)


def test_numpy_integers_are_accepted_for_every_count():
    model, a, b = _weights()
    ds = surface.line(model, a, b, _dataset(), steps=np.int64(2), subset=np.int32(10),
                      threads=np.int64(1), batch_size=np.int64(4), progress=False)
    assert ds.loss.shape == (2,) and ds.attrs["data"].startswith("toy/train n=10")


@pytest.mark.parametrize("name", ["threads", "batch_size", "points_per_pass", "bn_batch_size"])
def test_bools_and_floats_are_not_counts(name):
    for value in (True, 2.0):
        with pytest.raises(LossurfError, match=f"{name} must be a positive integer"):
            Evaluator(_two_class(), _data(), **{name: value})


def test_a_state_dict_where_the_model_goes_is_refused():
    model, a, b = _weights()
    data = _data()
    calls = [lambda: surface.line(a, a, b, data, progress=False),
             lambda: surface.basin(a, a, b, data, progress=False),
             lambda: surface.plane(a, [a, b, {k: -v for k, v in a.items()}], data, progress=False),
             lambda: surface.functional_distance(a, a, b, data),
             lambda: Evaluator(a, data)]
    for call in calls:
        with pytest.raises(LossurfError, match=r"model must be an nn\.Module.*got a dict.*first"):
            call()


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(20, 2)

    def forward(self, x):
        return {"logits": self.f(x)}


class FlatOut(DictOut):
    def forward(self, x):
        return self.f(x)[:, 0]


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_outputs_the_evaluator_cannot_use_are_refused(strategy):
    with pytest.raises(LossurfError, match=r"returns a dict.*logits \[N, classes\]"):
        _line(DictOut(), _data(), strategy=strategy)
    with pytest.raises(LossurfError, match=r"outputs of shape \(2,\).*logits \[N, classes\].*loss_fn"):
        _line(FlatOut(), _data(), strategy=strategy)


def test_a_one_dimensional_output_works_for_regression_with_a_loss():
    data = _data()
    reg = EvalData(data.x, data.x[:, 0], "regression")
    ds = _line(FlatOut(), reg, loss_fn=F.mse_loss)
    assert np.isfinite(ds.loss.values).all()


@pytest.mark.parametrize("store", [3, 1.5, ["a"]])
def test_store_must_be_a_path(store):
    model, a, b = _weights()
    with pytest.raises(LossurfError, match="store must be a path"):
        surface.line(model, a, b, _data(), store=store, progress=False)


# 7. weights of another dtype than the model


def test_check_compatible_says_the_dtype_differs():
    from lossurf.params import check_compatible

    model, a, _ = _weights()
    wide = {k: v.double() for k, v in a.items()}
    with pytest.raises(LossurfError, match=r"key '0.weight' is torch.float32 in the model but "
                                           r"torch.float64 in end.*same architecture.*\.float\(\)") as info:
        check_compatible([a, wide], ["the model", "end"])
    assert "different architectures" not in str(info.value)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_float64_weights_are_converted_to_the_model_dtype(strategy):
    model, a, b = _weights()
    data = _data()
    wide = [{k: v.double() for k, v in s.items()} for s in (a, b)]
    got = surface.line(model, *wide, data, steps=3, strategy=strategy, reference=wide[0],
                       progress=False)
    expected = surface.line(model, a, b, data, steps=3, strategy=strategy, reference=a,
                            progress=False)
    np.testing.assert_array_equal(got.loss.values, expected.loss.values)
    np.testing.assert_array_equal(got.fdist.values, expected.fdist.values)
    assert surface.functional_distance(model, *wide, data) == surface.functional_distance(
        model, a, b, data)
    ds = surface.basin(model, *wide, data, steps=3, progress=False)
    assert ds.attrs["geometry_init_distance"] == pytest.approx(
        surface.basin(model, a, b, data, steps=3, progress=False).attrs["geometry_init_distance"])


def test_an_integer_buffer_given_as_float_is_still_refused():
    torch.manual_seed(0)
    model = _bn_model()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = dict(a, **{"1.num_batches_tracked": a["1.num_batches_tracked"].float()})
    with pytest.raises(LossurfError, match="num_batches_tracked.*torch.int64 in the model"):
        surface.line(model, a, b, _data(), progress=False)


def test_direction_planes_take_float64_weights_as_the_model_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(64, 20), torch.randint(0, 2, (64,))
    data = EvalData(x, y, "classification")
    weights = model.state_dict()
    as_double = {k: v.double() for k, v in weights.items()}
    same = surface.random_plane(model, weights, data, steps=3, progress=False)
    cast = surface.random_plane(model, as_double, data, steps=3, progress=False)
    np.testing.assert_array_equal(same.loss.values, cast.loss.values)
    trajectory = [{k: v + 0.1 * i * torch.randn_like(v) for k, v in weights.items()} for i in range(3)]
    planes = [surface.pca_plane(model, t, data, steps=3, progress=False).loss.values
              for t in (trajectory, [{k: v.double() for k, v in s.items()} for s in trajectory])]
    np.testing.assert_array_equal(planes[0], planes[1])
