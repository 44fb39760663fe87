"""The ``recompute`` statistics pass as one graph, against PyTorch's own train-mode batch norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _surface_models import TinyBNCNN, perturbed_states
from torch import fx, nn

import lossurf.surface.runners as runners
from lossurf.surface.evaluate import EvalData, Evaluator
from lossurf.surface.statspass import (
    batch_norm_per_batch,
    call_slices,
    grouped_batch_norm,
    stats_graph,
)


@pytest.mark.parametrize("fn", [grouped_batch_norm, batch_norm_per_batch])
@pytest.mark.parametrize("shape,channels_last,affine", [
    ((48, 5, 4, 3), True, True), ((48, 5, 4, 3), False, False), ((48, 7), False, True),
    ((48, 3, 6), False, True)])
def test_grouped_batch_norm_is_train_mode_batch_norm_per_batch(shape, channels_last, affine, fn):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    c = shape[1]
    weight = torch.rand(c, generator=g) + 0.5 if affine else None
    bias = torch.randn(c, generator=g) if affine else None
    y, mean, var = fn(x, weight, bias, 1e-5, 16)
    assert mean.shape == var.shape == (3, c)
    for i in range(3):
        part = x[16 * i: 16 * (i + 1)]
        rm, rv = torch.zeros(c), torch.ones(c)
        ref = F.batch_norm(part, rm, rv, weight, bias, training=True, momentum=1.0, eps=1e-5)
        torch.testing.assert_close(y[16 * i: 16 * (i + 1)], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mean[i], rm, atol=1e-6, rtol=1e-6)  # momentum 1: the batch's
        torch.testing.assert_close(var[i], rv, atol=1e-6, rtol=1e-5)   # unbiased variance
    # a call shorter than one batch is one batch
    y, mean, var = fn(x[:5], weight, bias, 1e-5, 16)
    assert mean.shape == (1, c)
    torch.testing.assert_close(var[0], x[:5].transpose(0, 1).reshape(c, -1).var(1), atol=1e-6,
                               rtol=1e-5)


@pytest.mark.parametrize("n,batch,groups,expected", [
    (50, 16, 2, [(0, 32), (32, 48), (48, 50)]),
    (64, 16, 2, [(0, 32), (32, 64)]),
    (1024, 128, 11, [(0, 1024)]),
    (10, 16, 4, [(0, 10)]),
    (48, 16, 1, [(0, 16), (16, 32), (32, 48)]),
])
def test_call_slices_hold_whole_batches(n, batch, groups, expected):
    assert [(s.start, s.stop) for s in call_slices(n, batch, groups)] == expected


def test_the_graph_stops_at_the_last_batch_norm():
    model = TinyBNCNN().eval()
    gm = fx.symbolic_trace(model)
    bns = {"bn1": model.bn1, "bn2": model.bn2}
    graph = stats_graph(gm, bns, 16)
    targets = {n.target for n in graph.graph.nodes if n.op == "call_module"}
    assert targets == {"conv1", "conv2"}  # no fc, no pooling after bn2
    out = graph(torch.randn(32, 1, 8, 8))
    assert len(out) == 4 and out[0].shape == (2, 4) and out[2].shape == (2, 6)


class TwiceBN(nn.Module):
    """One BN layer applied twice: the rewrite does not apply (the modules path runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.bn(torch.relu(self.bn(self.conv(x)))), 1))


def test_a_batch_norm_called_twice_keeps_the_modules_path():
    model = TwiceBN().eval()
    assert stats_graph(fx.symbolic_trace(model), {"bn": model.bn}, 16) is None


def _data(model: nn.Module, n_bn: int = 50):
    torch.manual_seed(1)
    x = torch.randn(70, 1, 8, 8)
    return EvalData(x, torch.randint(0, 4 if isinstance(model, TwiceBN) else 5, (70,)),
                    "classification", torch.randn(n_bn, 1, 8, 8))


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("n_bn", [50, 64, 7])
def test_grouped_pass_equals_the_modules_pass(monkeypatch, share, n_bn):
    torch.manual_seed(0)
    model = TinyBNCNN()
    anchors = perturbed_states(model, 3)
    data = _data(model, n_bn)
    coeffs = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [-0.5, 1.5, 0.0]])
    kwargs = dict(strategy="loop", batch_size=32, bn_batch_size=16, compile=False,
                  share_first_layer=share)
    ev = Evaluator(model, data, **kwargs)
    got = ev.evaluate(anchors, coeffs)
    runner = ev._runners["loop"]
    assert runner.grouped and runner.variant.stats is not None
    monkeypatch.setattr(runners, "stats_graph", lambda *a, **k: None)
    plain = Evaluator(model, data, **kwargs)
    ref = plain.evaluate(anchors, coeffs)
    assert not plain._runners["loop"].grouped
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["accuracy"], ref["accuracy"], atol=1e-12)


def test_a_twice_called_batch_norm_still_recomputes_exactly():
    torch.manual_seed(0)
    model = TwiceBN()
    anchors = perturbed_states(model, 2)
    data = _data(model)
    ev = Evaluator(model, data, strategy="loop", batch_size=32, bn_batch_size=16, compile=False)
    got = ev.evaluate(anchors, torch.tensor([[0.3, 0.7]]))
    assert not ev._runners["loop"].grouped
    # naive: PyTorch's train-mode modules, cumulative average over the statistics batches
    work = TwiceBN()
    sd = {k: 0.3 * anchors[0][k] + 0.7 * anchors[1][k] if v.is_floating_point() else anchors[0][k]
          for k, v in anchors[0].items()}
    work.load_state_dict(sd)
    work.bn.reset_running_stats()
    work.bn.momentum = None
    work.train()
    with torch.no_grad():
        for i in range(0, 50, 16):
            work(data.bn_x[i: i + 16])
        work.eval()
        loss = F.cross_entropy(work(data.x), data.y).item()
    np.testing.assert_allclose(got["loss"], [loss], rtol=1e-5)


@pytest.mark.slow  # inductor compiles the evaluation and the statistics graphs (~20 s)
def test_the_compiled_statistics_graph_matches_the_naive_loop():
    from _surface_models import combine, naive_logits

    torch.manual_seed(0)
    model = TinyBNCNN()
    anchors = perturbed_states(model, 3)
    data = _data(model, 64)
    coeffs = torch.tensor([[0.2, 0.5, 0.3], [-0.5, 1.5, 0.0]])
    ev = Evaluator(model, data, strategy="loop", batch_size=35, bn_batch_size=16, compile=True)
    got = ev.evaluate(anchors, coeffs)
    assert ev._runners["loop"].variant.stats_fn is not ev._runners["loop"].variant.stats
    for i, c in enumerate(coeffs):
        logits = naive_logits(model, combine(anchors, c.double(), "recompute"), data.x,
                              "recompute", data.bn_x, bn_batch=16)
        np.testing.assert_allclose(got["loss"][i], F.cross_entropy(logits, data.y).item(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_bn", [50, 64])
def test_vmap_recompute_batches_its_statistics_and_equals_the_loop(monkeypatch, n_bn):
    torch.manual_seed(0)
    model = TinyBNCNN()
    anchors = perturbed_states(model, 3)
    data = _data(model, n_bn)
    coeffs = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [-0.5, 1.5, 0.0], [0.1, 0.1, 0.8]])
    kwargs = dict(batch_size=32, bn_batch_size=16, compile=False)
    ev = Evaluator(model, data, strategy="vmap", points_per_pass=4, **kwargs)
    got = ev.evaluate(anchors, coeffs)
    runner = ev._runners["vmap"]
    assert runner.stats_module is not None and runner.recorder is None
    assert len(runner.bn_calls) < len(runner.bn_slices)  # several statistics batches per call
    loop = Evaluator(model, data, strategy="loop", **kwargs).evaluate(anchors, coeffs)
    np.testing.assert_allclose(got["loss"], loop["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["accuracy"], loop["accuracy"], atol=1e-12)
    monkeypatch.setattr(runners, "stats_graph", lambda *a, **k: None)
    hooks = Evaluator(model, data, strategy="vmap", points_per_pass=4, **kwargs)
    ref = hooks.evaluate(anchors, coeffs)
    assert hooks._runners["vmap"].recorder is not None
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("share", [False, True])
def test_the_modules_fallback_runs_one_statistics_batch_at_a_time(share):
    """Calls of several statistics batches, but no statistics graph for the variant: the
    train-mode modules still see one batch of ``bn_batch_size`` at a time."""
    torch.manual_seed(0)
    model = TinyBNCNN()
    anchors = perturbed_states(model, 3)
    data = _data(model, 50)
    coeffs = torch.tensor([[0.2, 0.5, 0.3], [-0.5, 1.5, 0.0]])
    kwargs = dict(strategy="loop", batch_size=32, bn_batch_size=16, compile=False,
                  share_first_layer=share)
    ref = Evaluator(model, data, **kwargs).evaluate(anchors, coeffs)
    ev = Evaluator(model, data, **kwargs)
    runner = ev._runner("loop")
    runner.prepare(anchors, share, False)
    runner.variant.stats = runner.variant.stats_fn = None
    assert runner.grouped and len(runner.bn_calls) == 3
    got = ev.evaluate(anchors, coeffs)
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
