"""Functional distance and disagreement (paper eq. 4.1) against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _surface_models import TinyBNCNN, TinyLM, TinyMLP, combine, naive_logits, perturbed_states

from lossurf.surface.evaluate import EvalData, Evaluator


def _direct(model, a: dict, b: dict, x, policy="interpolate", bn_x=None):
    """eq. 4.1: sqrt(mean_i ||softmax F(x_i, a) - softmax F(x_i, b)||^2), and label disagreement."""
    la = naive_logits(model, a, x, policy, bn_x).reshape(-1, 5 if x.dim() != 2 or x.is_floating_point() else 11)
    lb = naive_logits(model, b, x, policy, bn_x).reshape(la.shape)
    d = torch.sqrt(((la.softmax(-1) - lb.softmax(-1)) ** 2).sum(-1).mean()).item()
    return d, (la.argmax(-1) != lb.argmax(-1)).double().mean().item()


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
@pytest.mark.parametrize("kind,policy", [("plain", "interpolate"), ("bn", "interpolate"),
                                         ("bn", "recompute")])
def test_fdist_and_disagreement_match_eq_4_1(kind, policy, strategy):
    torch.manual_seed(0)
    model = TinyBNCNN() if kind == "bn" else TinyMLP()
    x = torch.randn(64, 1, 8, 8) if kind == "bn" else torch.randn(64, 48)
    bn_x = torch.randn(40, *x.shape[1:])
    anchors = perturbed_states(model, 2, scale=0.5)
    reference = perturbed_states(model, 1, seed=9, scale=0.5)[0]
    coeffs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [-0.3, 1.3]], dtype=torch.float64)
    data = EvalData(x, torch.randint(0, 5, (64,)), "classification", bn_x)
    got = Evaluator(model, data, bn=policy, strategy=strategy).evaluate(anchors, coeffs, reference=reference)
    for p, c in enumerate(coeffs):
        d, dis = _direct(model, combine(anchors, c, policy), reference, x, policy, bn_x)
        assert got["fdist"][p] == pytest.approx(d, abs=1e-6)
        assert got["disagreement"][p] == pytest.approx(dis, abs=1e-12)
    assert got["fdist"].max() > 0.05  # the points really differ from the reference


def test_distance_to_itself_is_zero():
    torch.manual_seed(1)
    model = TinyBNCNN()
    x = torch.randn(30, 1, 8, 8)
    anchors = perturbed_states(model, 2)
    data = EvalData(x, torch.randint(0, 5, (30,)), "classification", torch.randn(30, 1, 8, 8))
    got = Evaluator(model, data, bn="recompute").evaluate(anchors, torch.eye(2), reference=anchors[1])
    assert got["fdist"][1] == pytest.approx(0.0, abs=1e-6)
    assert got["disagreement"][1] == 0.0
    assert got["fdist"][0] > 0.01


def test_language_model_distance_is_over_token_positions():
    torch.manual_seed(2)
    model = TinyLM()
    anchors = perturbed_states(model, 2, scale=0.5)
    x, y = torch.randint(0, 11, (16, 6)), torch.randint(0, 11, (16, 6))
    got = Evaluator(model, EvalData(x, y, "language_model")).evaluate(
        anchors, torch.tensor([[0.0, 1.0], [0.5, 0.5]]), reference=anchors[0])
    la = naive_logits(model, anchors[1], x).reshape(-1, 11)
    lb = naive_logits(model, anchors[0], x).reshape(-1, 11)
    d = torch.sqrt(((la.softmax(-1) - lb.softmax(-1)) ** 2).sum(-1).mean()).item()
    assert got["fdist"][0] == pytest.approx(d, abs=1e-6)
    assert got["disagreement"][0] == pytest.approx((la.argmax(-1) != lb.argmax(-1)).double().mean().item())
    assert np.all(got["fdist"] >= 0)
