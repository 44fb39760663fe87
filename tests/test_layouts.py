"""Memory format per convolution in the CPU loop: the timed choice, and values equal to a naive
loop whichever layers run in NCHW."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from _surface_models import TinyBNCNN, naive_metrics, perturbed_states
from test_evaluate import COEFFS, _naive_recompute

import lossurf.surface.evaluate as evaluate
from lossurf.surface.evaluate import EvalData, Evaluator
from lossurf.surface.layouts import MARGIN, conv_inputs, nchw_layers


def _data():
    torch.manual_seed(0)
    model = TinyBNCNN()
    x = torch.randn(70, 1, 8, 8)
    return model, perturbed_states(model, 3), EvalData(x, torch.randint(0, 5, (70,)),
                                                       "classification", torch.randn(50, 1, 8, 8))


def _fake_clock(durations: list[float]):
    """A clock whose successive (start, stop) pairs are ``durations`` apart."""
    now, steps = [0.0], iter(itertools.chain.from_iterable((0.0, d) for d in durations))

    def clock() -> float:
        now[0] += next(steps)
        return now[0]

    return clock


def test_conv_inputs_are_each_layers_input():
    model, _, data = _data()
    work = copy.deepcopy(model).eval()
    seen = conv_inputs(work, data.x[:7])
    assert list(seen) == ["conv1", "conv2"]
    assert seen["conv1"].shape == (7, 1, 8, 8) and torch.equal(seen["conv1"], data.x[:7])
    expected = torch.relu(work.bn1(work.conv1(data.x[:7])))
    torch.testing.assert_close(seen["conv2"], expected)
    assert not work.conv1._forward_pre_hooks  # the hooks are gone


def test_a_layer_runs_in_nchw_only_when_clearly_faster():
    model, _, data = _data()
    repeats = 2
    # per layer (forward order): repeats x (channels-last, NCHW), interleaved
    conv1 = [1.0, 0.5] * repeats  # NCHW takes half the time: switch
    conv2 = [1.0, MARGIN + 0.05] * repeats  # faster, but within the margin: stay
    chosen = nchw_layers(model, data.x[:16], repeats=repeats, clock=_fake_clock(conv1 + conv2))
    assert chosen == ["conv1"]
    conv2 = [1.0, MARGIN - 0.05, 1.0, 2.0]  # best of the repeats counts
    assert nchw_layers(model, data.x[:16], repeats=repeats,
                       clock=_fake_clock([1.0, 1.2] * repeats + conv2)) == ["conv2"]
    assert model.training  # the user's model was not switched to eval mode


@pytest.mark.parametrize("policy", ["recompute", "interpolate", "batch"])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("nchw", [["conv2"], ["conv1", "conv2"]])
def test_values_equal_the_naive_loop_whichever_layers_run_nchw(monkeypatch, policy, share, nchw):
    model, anchors, data = _data()
    monkeypatch.delenv("LOSSURF_THREADS")
    monkeypatch.setattr(evaluate, "nchw_layers", lambda m, x: list(nchw))
    monkeypatch.setattr(Evaluator, "_verified_layouts", lambda self, a, b, faster: (faster, "timed"))
    ev = Evaluator(model, data, bn=policy, strategy="loop", share_first_layer=share,
                   batch_size=32, bn_batch_size=16, compile=False, threads=1)
    plan = ev.plan(anchors, torch.zeros(90, 3))  # 90 points x 3 batches: timed
    assert plan["nchw_layers"] == sorted(nchw) and plan["layouts_reason"].startswith("timed")
    runner = ev._runner("loop")
    for name in nchw:  # the weights the layer reads are in NCHW order
        assert runner.work.get_submodule(name).weight.is_contiguous()
    got = ev.evaluate(anchors, COEFFS)
    loss, acc = naive_metrics(model, anchors, COEFFS, data.x, data.y, policy, data.bn_x, batch=32) \
        if policy != "recompute" else _naive_recompute(model, anchors, data)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], acc, atol=1e-12)


def _never(*args):
    raise AssertionError("the layouts must not be timed here")


@pytest.mark.parametrize("case,reason", [
    ("LOSSURF_THREADS", "LOSSURF_THREADS: channels-last throughout"),
    ("small grid", "not timed: a grid of fewer than 256 batches"),
    ("requested", "requested"),
    ("resumed", "resumed"),
    ("resumed old store", "resumed: channels-last throughout"),
])
def test_when_the_layouts_are_not_timed(monkeypatch, case, reason):
    model, anchors, data = _data()
    if case != "LOSSURF_THREADS":
        monkeypatch.delenv("LOSSURF_THREADS")
    monkeypatch.setattr(evaluate, "nchw_layers", _never)
    ev = Evaluator(model, data, batch_size=32, compile=False, threads=1,
                   channels_last=True if case == "requested" else None)
    points = 2 if case == "small grid" else 90
    previous = {"resumed": {"strategy": "loop", "strategy_k": 1, "nchw_layers": ["conv2"]},
                "resumed old store": {"strategy": "loop", "strategy_k": 1}}.get(case)
    plan = ev.plan(anchors, torch.zeros(points, 3), previous)
    assert plan["layouts_reason"] == reason
    assert plan["nchw_layers"] == (["conv2"] if case == "resumed" else [])


def test_a_plane_records_its_layouts_and_its_resume_keeps_them(monkeypatch, tmp_path):
    """A plane interrupted after its first chunk resumes with the recorded layouts (not timed
    again) and ends bitwise equal to a plane computed in one go."""
    import lossurf.surface as surface

    model, anchors, data = _data()
    monkeypatch.delenv("LOSSURF_THREADS")
    monkeypatch.setattr(evaluate, "nchw_layers", lambda m, x: ["conv2"])
    monkeypatch.setattr(Evaluator, "_verified_layouts", lambda self, a, b, faster: (faster, "timed"))
    options = dict(steps=13, progress=False, bn="interpolate", batch_size=16, threads=1,
                   chunk_points=32)
    clean = surface.plane(model, anchors, data, **options)
    assert clean.attrs["nchw_layers"] == ["conv2"]

    calls, evaluate_chunk = [0], Evaluator.evaluate

    def interrupted(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return evaluate_chunk(self, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "evaluate", interrupted)
    store = tmp_path / "p.zarr"
    with pytest.raises(KeyboardInterrupt):
        surface.plane(model, anchors, data, store=store, **options)
    monkeypatch.setattr(Evaluator, "evaluate", evaluate_chunk)
    monkeypatch.setattr(evaluate, "nchw_layers", _never)
    resumed = surface.plane(model, anchors, data, store=store, **options)
    assert resumed.attrs["nchw_layers"] == ["conv2"]  # and _never was not called
    np.testing.assert_array_equal(resumed["loss"].values, clean["loss"].values)


@pytest.mark.parametrize("ratio,kept", [(0.5, True), (evaluate.SAMPLE_MARGIN + 0.03, False)])
def test_layers_faster_alone_are_kept_only_if_a_whole_sample_is_faster(monkeypatch, ratio, kept):
    """A layout change costs conversions beyond the layer: the candidates found faster alone
    switch only when a sample of a point (timed here by a fake clock) is faster with them."""
    model, anchors, data = _data()
    monkeypatch.delenv("LOSSURF_THREADS")
    monkeypatch.setattr(evaluate, "nchw_layers", lambda m, x: ["conv2"])
    ev = Evaluator(model, data, bn="recompute", batch_size=32, compile=False, threads=1)
    now = [0.0]

    def clock() -> float:  # every pass takes 1 s channels-last, ``ratio`` s with conv2 in NCHW
        now[0] += ratio if ev._nchw else 1.0
        return now[0]

    monkeypatch.setattr(evaluate, "clock", clock)
    plan = ev.plan(anchors, torch.zeros(90, 3))
    assert plan["nchw_layers"] == (["conv2"] if kept else [])
    assert f"took {ratio:.2f}x the time" in plan["layouts_reason"]
    assert ("not enough to switch" in plan["layouts_reason"]) != kept
    assert ev._runner("loop").nchw == frozenset(plan["nchw_layers"])
