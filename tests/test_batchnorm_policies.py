"""BN policies, statistics re-estimation and BN folding."""

from __future__ import annotations

import copy

import pytest
import torch
from _surface_models import TinyBNCNN, TinyMLP, perturbed_states
from torch import nn

from lossurf.surface.batchnorm import (
    StatsRecorder,
    batchnorm_modules,
    begin_recompute,
    end_recompute,
    fold_into,
    use_batch_statistics,
)
from lossurf.surface.evaluate import EvalData, Evaluator
from lossurf.surface.fastpath import find_first_layer, find_fold_pairs, trace


@pytest.mark.parametrize("conv", [True, False])
def test_fold_is_exact(conv):
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, 3, bias=conv) if conv else nn.Linear(6, 4, bias=False)
    bn = nn.BatchNorm2d(4) if conv else nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(5, 3, 6, 6) if conv else torch.randn(5, 6)
    expected = bn.eval()(layer(x))
    w, b = torch.empty_like(layer.weight), torch.empty(4)
    fold_into(layer.weight, layer.bias, bn, bn.running_mean, bn.running_var, bn.weight, bn.bias, w, b)
    got = torch.nn.functional.conv2d(x, w, b) if conv else torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_recompute_is_the_exact_mean_over_batches():
    torch.manual_seed(0)
    model = TinyBNCNN().eval()
    bns = batchnorm_modules(model)
    xs = [torch.randn(8, 1, 8, 8) * (i + 1) + i for i in range(3)]
    begin_recompute(bns)
    with torch.no_grad():
        for xb in xs:
            model(xb)
    end_recompute(bns)
    # bn1 sees conv1's output directly: its statistics are plain means over the batches
    outs = [model.conv1(xb).detach() for xb in xs]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    varis = torch.stack([o.transpose(0, 1).reshape(4, -1).var(1) for o in outs]).mean(0)
    torch.testing.assert_close(bns["bn1"].running_mean, means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bns["bn1"].running_var, varis, atol=1e-5, rtol=1e-5)
    assert not model.drop.training and not bns["bn1"].training


def test_stats_recorder_equals_train_mode_buffers():
    torch.manual_seed(0)
    model = TinyBNCNN()
    batch_copy = copy.deepcopy(model)
    use_batch_statistics(batchnorm_modules(batch_copy))
    rec = StatsRecorder(batchnorm_modules(batch_copy))
    bns = batchnorm_modules(model)
    begin_recompute(bns)
    xs = [torch.randn(8, 1, 8, 8) + i for i in range(3)]
    total = None
    with torch.no_grad():
        for xb in xs:
            model(xb)
            rec.records.clear()
            batch_copy(xb)
            total = list(rec.records) if total is None else [t + r for t, r in zip(total, rec.records)]
    rec.remove()
    for j, bn in enumerate(bns.values()):
        torch.testing.assert_close(total[2 * j] / 3, bn.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(total[2 * j + 1] / 3, bn.running_var, atol=1e-5, rtol=1e-5)


def test_batch_policy_updates_nothing_and_uses_batch_statistics():
    torch.manual_seed(0)
    model = TinyBNCNN()
    anchors = perturbed_states(model, 1)
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 5, (32,))
    got = Evaluator(model, EvalData(x, y, "classification"), bn="batch", batch_size=32).evaluate(
        anchors, torch.ones(1, 1))
    m = copy.deepcopy(model)
    m.load_state_dict(anchors[0])
    m.eval()
    for b in batchnorm_modules(m).values():
        b.train()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(m(x), y).item()
    assert got["loss"][0] == pytest.approx(expected, abs=1e-5)
    assert torch.equal(model.bn1.running_mean, torch.zeros(4))  # the user's model untouched


def test_policies_differ_on_an_interpolated_bn_network():
    # Interpolated statistics are not those of the interpolated network: the policies must give
    # different losses in the middle and agree (interpolate vs recompute) only by accident.
    torch.manual_seed(0)
    model = TinyBNCNN()
    anchors = perturbed_states(model, 2, scale=0.5)
    data = EvalData(torch.randn(40, 1, 8, 8), torch.randint(0, 5, (40,)), "classification",
                    torch.randn(40, 1, 8, 8))
    mid = torch.tensor([[0.5, 0.5]])
    losses = {p: Evaluator(model, data, bn=p).evaluate(anchors, mid)["loss"][0]
              for p in ("recompute", "interpolate", "batch")}
    assert abs(losses["recompute"] - losses["interpolate"]) > 1e-3


def test_fold_pairs_and_first_layer_detection():
    torch.manual_seed(0)
    gm = trace(TinyBNCNN())
    pairs = {(p.layer, p.bn) for p in find_fold_pairs(gm, torch.randn(2, 1, 8, 8))}
    assert pairs == {("conv1", "bn1"), ("conv2", "bn2")}
    first = find_first_layer(gm)
    assert first is not None and first.layer == "conv1"
    mlp_first = find_first_layer(trace(TinyMLP()))
    assert mlp_first.layer == "fc1"  # reached through flatten
    torch.testing.assert_close(mlp_first.pre(torch.ones(2, 6, 8)), torch.ones(2, 48))

    class Residual(nn.Module):  # the input is used twice: no shared first layer
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + x

    assert find_first_layer(trace(Residual())) is None

    class Seq3d(nn.Module):  # Linear on [N, L, C] then BatchNorm1d over dim 1: not foldable
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            return self.bn(self.fc(x))

    assert find_fold_pairs(trace(Seq3d()), torch.randn(2, 3, 4)) == []
