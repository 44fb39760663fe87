"""Precision settings: the TF32 flags and autocast they set, their error against float64, and
that ``precision`` reaches the evaluator, the API, the attrs and the store's identity."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _surface_models import TinyBNCNN, TinyMLP, naive_metrics, perturbed_states

import lossurf.surface as surface
from lossurf.errors import LossurfError
from lossurf.precision import PRECISIONS, check_precision, precision_context
from lossurf.surface.evaluate import EvalData, Evaluator

COEFFS = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3], [-0.5, 1.5, 0.0]], dtype=torch.float64)


def _setup(kind: str):
    torch.manual_seed(0)
    model = TinyBNCNN() if kind == "bn" else TinyMLP()
    x = torch.randn(96, 1, 8, 8) if kind == "bn" else torch.randn(96, 48)
    y = torch.randint(0, 5, (96,))
    return model, perturbed_states(model, 3), EvalData(x, y, "classification",
                                                        torch.randn(64, *x.shape[1:]))


def _float64_loss(model, anchors, data, policy):
    """The naive loop entirely in float64: an independent reference."""
    double = copy.deepcopy(model).double()
    anchors64 = [{k: v.double() if v.is_floating_point() else v for k, v in a.items()}
                 for a in anchors]
    bn_x = data.bn_x.double()
    if policy == "recompute":
        from _surface_models import combine, naive_logits
        import torch.nn.functional as F

        return np.array([F.cross_entropy(naive_logits(double, combine(anchors64, c, policy),
                                                      data.x.double(), policy, bn_x, bn_batch=32),
                                         data.y).item() for c in COEFFS])
    return np.array(naive_metrics(double, anchors64, COEFFS, data.x.double(), data.y, policy,
                                  bn_x)[0])


def test_context_sets_and_restores_the_tf32_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision_context("fp32", "cpu"):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert not torch.is_autocast_enabled("cpu")
    with precision_context("tf32", "cpu"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with precision_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert not torch.is_autocast_enabled("cpu")


def test_context_restores_after_an_exception():
    torch.backends.cudnn.allow_tf32 = True
    with pytest.raises(RuntimeError), precision_context("fp32", "cpu"):
        raise RuntimeError("boom")
    assert torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("bad", ["fp16", "FP32", 32, None])
def test_unknown_precision_is_one_clear_error(bad):
    with pytest.raises(LossurfError, match=r"unknown precision .*use one of: fp32, tf32, bf16"):
        check_precision(bad)
    model, _, data = _setup("plain")
    with pytest.raises(LossurfError, match="unknown precision"):
        Evaluator(model, data, precision=bad)


@pytest.mark.parametrize("kind,policy", [("bn", "recompute"), ("bn", "interpolate"),
                                         ("plain", "interpolate")])
@pytest.mark.parametrize("strategy,share", [("loop", False), ("loop", True), ("vmap", False)])
def test_error_against_float64(kind, policy, strategy, share):
    model, anchors, data = _setup(kind)
    want = _float64_loss(model, anchors, data, policy)
    errors = {}
    for precision in PRECISIONS:
        ev = Evaluator(model, data, bn=policy, strategy=strategy, share_first_layer=share,
                       batch_size=32, bn_batch_size=32, points_per_pass=2, compile=False,
                       precision=precision)
        got = ev.evaluate(anchors, COEFFS)["loss"]
        errors[precision] = np.max(np.abs(got - want) / np.abs(want))
    assert errors["fp32"] < 1e-5 and errors["tf32"] < 1e-5  # TF32 does nothing on CPU
    # bfloat16 has an 8-bit mantissa: about 0.4% per rounding; the forward really ran in it
    assert 1e-6 < errors["bf16"] < 5e-2


def test_precision_reaches_the_api_attrs_and_the_store_identity(tmp_path):
    model, anchors, data = _setup("bn")
    store = tmp_path / "line.zarr"
    fp32 = surface.line(model, anchors[0], anchors[1], data, steps=3, store=store, progress=False)
    assert fp32.attrs["precision"] == "fp32"
    bf16 = surface.line(model, anchors[0], anchors[1], data, steps=3, progress=False,
                        precision="bf16")
    assert bf16.attrs["precision"] == "bf16"
    assert not np.array_equal(bf16.loss.values, fp32.loss.values)
    np.testing.assert_allclose(bf16.loss.values, fp32.loss.values, rtol=5e-2)
    with pytest.raises(LossurfError, match="precision differs: 'fp32' there, 'bf16' now"):
        surface.line(model, anchors[0], anchors[1], data, steps=3, store=store, progress=False,
                     precision="bf16")
    again = surface.line(model, anchors[0], anchors[1], data, steps=3, store=store,
                         progress=False)
    np.testing.assert_array_equal(again.loss.values, fp32.loss.values)


def test_a_store_from_before_the_precision_attr_resumes_as_fp32(tmp_path, monkeypatch):
    import lossurf.surface.store as store_mod

    model, anchors, data = _setup("plain")
    store = tmp_path / "old.zarr"
    # a store written without the attr, as every store before precision existed
    monkeypatch.setattr(Evaluator, "provenance", property(lambda self: {}))
    surface.line(model, anchors[0], anchors[1], data, steps=3, store=store, progress=False)
    monkeypatch.undo()
    assert "precision" not in store_mod.open_surface(store).attrs
    surface.line(model, anchors[0], anchors[1], data, steps=3, store=store, progress=False)
    with pytest.raises(LossurfError, match="precision differs"):
        surface.line(model, anchors[0], anchors[1], data, steps=3, store=store, progress=False,
                     precision="tf32")
