"""The batched evaluator against a naive one-point-at-a-time loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _surface_models import TinyBNCNN, TinyLM, TinyMLP, naive_metrics, perturbed_states

from lossurf.data.base import Dataset
from lossurf.errors import LossurfError
from lossurf.surface.evaluate import EvalData, Evaluator

COEFFS = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3], [-0.5, 1.5, 0.0], [0.0, 0.0, 1.0]],
                      dtype=torch.float64)


def _setup(kind: str):
    torch.manual_seed(0)
    model = TinyBNCNN() if kind == "bn" else TinyMLP()
    x = torch.randn(70, 1, 8, 8) if kind == "bn" else torch.randn(70, 48)
    bn_x = torch.randn(50, *x.shape[1:])
    y = torch.randint(0, 5, (70,))
    return model, perturbed_states(model, 3), EvalData(x, y, "classification", bn_x)


@pytest.mark.parametrize("kind", ["bn", "plain"])
@pytest.mark.parametrize("policy", ["recompute", "interpolate", "batch"])
@pytest.mark.parametrize("strategy,share", [("loop", False), ("loop", True), ("vmap", False)])
def test_matches_naive_loop(kind, policy, strategy, share):
    model, anchors, data = _setup(kind)
    ev = Evaluator(model, data, bn=policy, strategy=strategy, share_first_layer=share,
                   batch_size=32, bn_batch_size=16, points_per_pass=3, compile=False)
    got = ev.evaluate(anchors, COEFFS)
    # the 'batch' policy depends on the evaluation batches, so the naive loop uses the same ones
    loss, acc = naive_metrics(model, anchors, COEFFS, data.x, data.y, policy, data.bn_x, batch=32) \
        if policy != "recompute" else _naive_recompute(model, anchors, data)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], acc, atol=1e-12)
    assert got["loss"].dtype == np.float64 and got["loss"].shape == (4,)


def _naive_recompute(model, anchors, data):
    from _surface_models import combine, naive_logits

    losses, accs = [], []
    for c in COEFFS:
        logits = naive_logits(model, combine(anchors, c, "recompute"), data.x, "recompute",
                              data.bn_x, bn_batch=16)
        losses.append(F.cross_entropy(logits, data.y).item())
        accs.append((logits.argmax(-1) == data.y).double().mean().item())
    return losses, accs


def test_end_points_reproduce_anchor_losses():
    model, anchors, data = _setup("bn")
    got = Evaluator(model, data, bn="interpolate").evaluate(anchors, torch.eye(3, dtype=torch.float64))
    for a, sd in enumerate(anchors):
        m = copy.deepcopy(model)
        m.load_state_dict(sd)
        with torch.no_grad():
            expected = F.cross_entropy(m.eval()(data.x), data.y).item()
        assert got["loss"][a] == pytest.approx(expected, abs=1e-6)


def test_a_used_evaluator_pickles_and_gives_the_same_numbers():
    # Ray ships evaluators to workers; one that has already run holds fx-rewritten runners.
    import pickle

    model, anchors, data = _setup("bn")
    evaluator = Evaluator(model, data, bn="recompute", strategy="loop")
    coefficients = torch.eye(3, dtype=torch.float64)
    first = evaluator.evaluate(anchors, coefficients)
    copy_ = pickle.loads(pickle.dumps(evaluator))
    again = copy_.evaluate(anchors, coefficients)
    np.testing.assert_array_equal(first["loss"], again["loss"])


@pytest.mark.slow  # inductor compilation takes ~13 s on two cores
def test_default_strategy_with_compile_matches_naive():
    model, anchors, data = _setup("bn")
    got = Evaluator(model, data, bn="interpolate", compile=True).evaluate(anchors, COEFFS[:2])
    loss, _ = naive_metrics(model, anchors, COEFFS[:2], data.x, data.y)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    model, anchors, data = _setup("bn")

    def broken(fn, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    ev = Evaluator(model, data, bn="interpolate", compile=True)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        got = ev.evaluate(anchors, COEFFS[:2])
    loss, _ = naive_metrics(model, anchors, COEFFS[:2], data.x, data.y)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5)


def test_shared_first_layer_cache_follows_the_anchors():
    model, anchors, data = _setup("plain")
    ev = Evaluator(model, data, bn="interpolate", share_first_layer=True)
    ev.evaluate(anchors, COEFFS)
    runner = ev._runners["loop"]
    cached = runner._first_eval
    ev.evaluate(anchors, COEFFS[:1])  # same anchors: the cache is reused
    assert runner._first_eval is cached
    other = perturbed_states(model, 3, seed=5)
    got = ev.evaluate(other, COEFFS)  # new anchors: recomputed, not stale
    loss, _ = naive_metrics(model, other, COEFFS, data.x, data.y)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5)
    plain = Evaluator(model, data, bn="interpolate", share_first_layer=False).evaluate(other, COEFFS)
    np.testing.assert_allclose(got["loss"], plain["loss"], atol=1e-6)


def test_user_model_is_not_mutated():
    model, anchors, data = _setup("bn")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for policy in ("recompute", "interpolate", "batch"):
        for strategy in ("loop", "vmap"):
            Evaluator(model, data, bn=policy, strategy=strategy).evaluate(anchors, COEFFS[:2])
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_language_model_token_metrics_and_perplexity():
    torch.manual_seed(0)
    model = TinyLM()
    anchors = perturbed_states(model, 2)
    x = torch.randint(0, 11, (20, 7))
    y = torch.randint(0, 11, (20, 7))
    coeffs = torch.tensor([[1.0, 0.0], [0.4, 0.6]], dtype=torch.float64)
    got = Evaluator(model, EvalData(x, y, "language_model")).evaluate(anchors, coeffs)
    loss, acc = naive_metrics(model, anchors, coeffs, x, y)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5)
    np.testing.assert_allclose(got["accuracy"], acc, atol=1e-12)
    np.testing.assert_allclose(got["perplexity"], np.exp(loss), rtol=1e-5)


def test_progress_reports_every_point():
    model, anchors, data = _setup("plain")
    seen = []
    Evaluator(model, data, strategy="vmap", points_per_pass=3).evaluate(anchors, COEFFS, progress=seen.append)
    assert seen == [3, 1]


def test_from_dataset_uses_fixed_seeded_subsets():
    g = torch.Generator().manual_seed(0)
    ds = Dataset("toy", "classification", torch.randn(40, 3, generator=g), torch.arange(40) % 3,
                 torch.randn(10, 3, generator=g), torch.arange(10) % 3, num_classes=3)
    a = EvalData.from_dataset(ds, "train", subset=12, seed=1, bn_examples=8)
    b = EvalData.from_dataset(ds, "train", subset=12, seed=1, bn_examples=8)
    assert a.x.shape == (12, 3) and a.bn_x.shape == (8, 3)
    assert torch.equal(a.x, b.x) and torch.equal(a.bn_x, b.bn_x)
    rows = [int((ds.train_x == r).all(1).nonzero()) for r in a.x]
    assert torch.equal(a.y, ds.train_y[rows])
    test = EvalData.from_dataset(ds, "test")
    assert torch.equal(test.x, ds.test_x)


def test_bad_input_gets_clear_errors():
    model, anchors, data = _setup("bn")
    with pytest.raises(LossurfError, match="unknown BN policy 'average'.*recompute"):
        Evaluator(model, data, bn="average")
    with pytest.raises(LossurfError, match="unknown strategy 'fast'.*loop"):
        Evaluator(model, data, strategy="fast")
    with pytest.raises(LossurfError, match="needs training inputs"):
        Evaluator(model, EvalData(data.x, data.y, "classification"), bn="recompute")
    ev = Evaluator(model, data)
    with pytest.raises(LossurfError, match="coefficients have shape .*\\[points, 3\\]"):
        ev.evaluate(anchors, np.ones((4, 2)))
    with pytest.raises(LossurfError, match="NaN"):
        ev.evaluate(anchors, np.full((1, 3), np.nan))
    missing = dict(anchors[1])
    del missing["fc.bias"]
    with pytest.raises(LossurfError, match=r"anchors\[1\] does not match.*fc.bias"):
        ev.evaluate([anchors[0], missing], np.ones((1, 2)))
    other = TinyMLP().state_dict()
    with pytest.raises(LossurfError, match=r"anchors\[0\] does not match"):
        ev.evaluate([other], np.ones((1, 1)))
    wrong = dict(anchors[0], **{"fc.weight": torch.zeros(5, 7)})
    with pytest.raises(LossurfError, match=r"fc.weight.*shape"):
        ev.evaluate([wrong], np.ones((1, 1)))
    with pytest.raises(LossurfError, match="non-empty list"):
        ev.evaluate([], np.ones((1, 0)))
    with pytest.raises(LossurfError, match="reference does not match"):
        ev.evaluate(anchors, np.eye(3), reference=other)
    with pytest.raises(LossurfError, match="unknown task"):
        EvalData(data.x, data.y, "segmentation")
    with pytest.raises(LossurfError, match="70 inputs and 3 targets"):
        EvalData(data.x, data.y[:3], "classification")


def test_the_shared_first_layer_output_is_rectified_in_place_and_the_inputs_are_not():
    """The ReLU after ``first_out`` (the evaluator's own fresh combination) runs in place; no
    in-place op ever touches the evaluation inputs."""
    model, anchors, data = _setup("plain")
    x0 = data.x.clone()
    ev = Evaluator(model, data, strategy="loop", share_first_layer=True, compile=False)
    got = ev.evaluate(anchors, COEFFS)
    graph = ev._runners["loop"].variant.eval_module.graph
    first_out = next(n for n in graph.nodes if n.target == "first_out")
    assert [u.target for u in first_out.users] == [torch.relu_]
    assert torch.equal(data.x, x0) and torch.equal(ev.x, x0)
    loss, _ = naive_metrics(model, anchors, COEFFS, data.x, data.y)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5, rtol=1e-5)


class _ReluOfInput(torch.nn.Module):
    """A ReLU straight on a view of the input (flatten): it must never run in place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(48, 16)
        self.bn = torch.nn.BatchNorm1d(16)
        self.out = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.lin(torch.relu(torch.flatten(x, 1))))))


@pytest.mark.parametrize("share", [False, True])
def test_a_relu_on_a_view_of_the_inputs_never_writes_into_them(share):
    torch.manual_seed(0)
    model = _ReluOfInput()
    anchors = perturbed_states(model, 3)
    x = torch.randn(40, 48)  # flatten of 2-D inputs is the inputs themselves
    data = EvalData(x, torch.randint(0, 5, (40,)), "classification", torch.randn(20, 48))
    x0 = x.clone()
    ev = Evaluator(model, data, bn="interpolate", strategy="loop", share_first_layer=share,
                   compile=False)
    got = ev.evaluate(anchors, COEFFS)
    assert ev._runners["loop"].folds  # the graph was rewritten (BN folded)
    assert torch.equal(ev.x, x0) and torch.equal(x, x0)
    loss, _ = naive_metrics(model, anchors, COEFFS, x, data.y)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5, rtol=1e-5)


def test_batch_sums_match_float64_cross_entropy_argmax_and_softmax_distance():
    """The batch sums (logsumexp - picked logit, one max for the prediction) against float64
    cross-entropy, argmax and softmax, at K points, with exact ties and a reference."""
    from lossurf.surface.evaluate import _batch_sums

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 300, 10, generator=g) * 6
    logits[:, :20] = 1.5  # rows of equal logits: the prediction must be argmax's (index 0)
    logits[1, 20:40, 3:5] = 50.0  # a tie between two large logits: index 3 wins
    y = torch.randint(0, 10, (300,), generator=g)
    ref_logits = torch.randn(300, 10, generator=g)
    ref = (F.softmax(ref_logits, dim=-1), ref_logits.argmax(-1))
    got = _batch_sums(logits, y, ref).numpy()
    wide = logits.double()
    for k in range(4):
        assert got[k, 0] == pytest.approx(F.cross_entropy(wide[k], y, reduction="sum").item(),
                                          rel=1e-6)
        pred = wide[k].argmax(-1)
        assert got[k, 1] == (pred == y).sum().item()
        dist = (F.softmax(wide[k], -1) - ref[0].double()).square().sum().item()
        assert got[k, 2] == pytest.approx(dist, rel=1e-5)
        assert got[k, 3] == (pred != ref[1]).sum().item()
    assert (logits[1, 20:40].argmax(-1) == 3).all()
