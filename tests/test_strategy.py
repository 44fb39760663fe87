"""The strategy chooser: rules on the model's activations, timing with a faked clock, and the
plan taken once per grid (recorded in attrs, kept across chunks and pickling)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _surface_models import TinyBNCNN, TinyMLP, perturbed_states
from torch import nn

import lossurf.surface as surface
import lossurf.surface.evaluate as evaluate
from lossurf.surface.evaluate import EvalData, Evaluator
from lossurf.surface.strategy import (
    DEFAULT_K,
    LOOP_ACTIVATIONS,
    Choice,
    candidates,
    memory_k,
    model_facts,
    rule_choice,
    timed_choice,
)


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """The thread count by rule, whatever the load now (its timing is tested in test_threads)."""
    monkeypatch.delenv("LOSSURF_THREADS", raising=False)
    monkeypatch.setattr(evaluate, "machine_threads", evaluate.usable_cores)


def _w2_like() -> tuple[nn.Module, torch.Tensor]:
    """Conv-heavy with large activations (VGG-BN on 32x32, in miniature)."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return model, torch.randn(4, 3, 32, 32)


def _w3_like() -> tuple[nn.Module, torch.Tensor]:
    """Dense: 784-512-256-10."""
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    return model, torch.randn(4, 784)


def test_model_facts_count_activations_per_example():
    model, x = _w3_like()
    facts = model_facts(model, x)
    assert facts.activations == 512 + 256 + 10 and not facts.has_conv
    assert facts.largest == 512  # the widest layer's output: what sets the CPU batch size
    assert facts.parameters == sum(p.numel() for p in model.parameters())
    model, x = _w2_like()
    facts = model_facts(model, x)
    # two convolutions and two BNs of 32x32x32 values, and the classifier
    assert facts.activations == 4 * 32 * 32 * 32 + 10 and facts.has_conv
    assert model.training  # the mode is restored


def test_rules_pick_the_loop_for_w2_like_and_k_points_for_w3_like_on_cuda():
    cuda = torch.device("cuda")  # the rule only reads the device type: no GPU needed
    w2 = rule_choice(model_facts(*_w2_like()), cuda)
    w3 = rule_choice(model_facts(*_w3_like()), cuda, k=8)
    assert (w2.strategy, w2.k) == ("loop", 1) and str(LOOP_ACTIVATIONS)[:2] in w2.reason.replace(",", "")
    assert (w3.strategy, w3.k) == ("vmap", 8) and "778" in w3.reason
    for facts in (model_facts(*_w2_like()), model_facts(*_w3_like()), None):
        assert rule_choice(facts, "cpu").strategy == "loop"


class FakeGPU:
    """A clock driven by a cost model of a GPU: a pass costs the larger of a launch floor and
    its arithmetic; vmap over convolutions pays 1.6x (grouped convolutions)."""

    def __init__(self, facts, launch: float = 2e-3, per_value: float = 2e-8) -> None:
        self.facts, self.launch, self.per_value, self.now = facts, launch, per_value, 0.0
        self.runs: list[tuple[str, int, int]] = []

    def clock(self) -> float:
        return self.now

    def pass_cost(self, choice: Choice) -> float:
        work = choice.k * self.facts.activations * 1024 * self.per_value
        if choice.strategy == "vmap" and self.facts.has_conv:
            work *= 1.6
        return max(self.launch, work)

    def run(self, choice: Choice, n: int) -> None:
        self.runs.append((choice.strategy, choice.k, n))
        self.now += -(-n // choice.k) * self.pass_cost(choice)


@pytest.mark.parametrize("make,expected", [(_w2_like, ("loop", 1)), (_w3_like, ("vmap", 16))])
def test_timing_picks_the_loop_for_w2_like_and_k_points_for_w3_like(make, expected):
    gpu = FakeGPU(model_facts(*make()))
    choice = timed_choice(candidates(8), gpu.run, 16, gpu.clock)
    assert (choice.strategy, choice.k) == expected
    assert choice.reason.startswith("timed: loop ") and "vmap K=16" in choice.reason
    # every candidate ran once untimed (warm-up), then on at least the timed points
    assert [r[:2] for r in gpu.runs[::2]] == [("loop", 1), ("vmap", 4), ("vmap", 8), ("vmap", 16)]
    assert all(n >= 16 for _, _, n in gpu.runs[1::2])


def test_timing_skips_a_failing_candidate_and_falls_back_to_the_loop():
    def run(choice: Choice, n: int) -> None:
        if choice.strategy == "vmap":
            raise RuntimeError("vmap of data-dependent control flow")

    t = iter(np.arange(0.0, 100.0, 0.5))
    assert timed_choice(candidates(), run, 4, lambda: next(t)).strategy == "loop"
    assert timed_choice(candidates(), lambda c, n: 1 / 0, 4).reason.startswith("timed: every")


def _data(kind="bn"):
    torch.manual_seed(0)
    model = TinyBNCNN() if kind == "bn" else TinyMLP()
    x = torch.randn(64, 1, 8, 8) if kind == "bn" else torch.randn(64, 48)
    return model, perturbed_states(model, 3), EvalData(
        x, torch.randint(0, 5, (64,)), "classification", torch.randn(32, *x.shape[1:]))


@pytest.mark.parametrize("fast", ["loop", "vmap"])
def test_the_time_strategy_keeps_the_fastest_and_records_it_in_attrs(monkeypatch, fast):
    """The evaluator's timer, faked: whichever strategy the fake makes fast is chosen, named in
    the Dataset's attrs, and gives the same numbers as that strategy requested directly."""
    model, anchors, data = _data()
    now = [0.0]
    original = Evaluator._evaluate_with

    def spy(self, strategy, anchors_, coeffs, *args):
        per_pass = 1.0 if strategy == fast else 100.0
        passes = len(coeffs) if strategy == "loop" else -(-len(coeffs) // self.points_per_pass)
        now[0] += passes * per_pass
        return original(self, strategy, anchors_, coeffs, *args)

    monkeypatch.setattr(Evaluator, "_evaluate_with", spy)
    monkeypatch.setattr(evaluate, "clock", lambda: now[0])
    ds = surface.line(model, anchors[0], anchors[1], data, steps=5, strategy="time",
                      progress=False, compile=False)
    assert ds.attrs["strategy"] == fast and ds.attrs["strategy_reason"].startswith("timed:")
    assert ds.attrs["strategy_k"] == (1 if fast == "loop" else 2 * DEFAULT_K)
    monkeypatch.undo()
    direct = surface.line(model, anchors[0], anchors[1], data, steps=5, strategy=fast,
                          progress=False, compile=False)
    assert direct.attrs["strategy_reason"] == "requested"
    np.testing.assert_allclose(ds.loss.values, direct.loss.values, rtol=1e-5)


def test_default_on_cpu_is_the_loop_by_rule_and_recorded():
    model, anchors, data = _data("plain")
    ds = surface.plane(model, anchors, data, steps=3, progress=False)
    assert ds.attrs["strategy"] == "loop" and ds.attrs["strategy_k"] == 1
    assert ds.attrs["strategy_reason"].startswith("rule: CPU")
    assert ds.attrs["precision"] == "fp32" and ds.attrs["threads"] >= 1
    assert ds.attrs["compile"] is False  # a plain MLP is never compiled


def test_compilation_is_decided_once_for_the_whole_grid(monkeypatch):
    """A 6x6 grid in chunks of 6 points: one decision, from all 36 points (per chunk, 6 points
    would have fallen under the threshold)."""
    model, anchors, data = _data()
    seen: list[int] = []
    monkeypatch.setattr(evaluate, "COMPILE_MIN_WORK", 30 * (64 + 32))
    monkeypatch.setattr(evaluate, "compiler_available", lambda: True)
    original = Evaluator._want_compile
    monkeypatch.setattr(Evaluator, "_want_compile",
                        lambda self, points: seen.append(points) or original(self, points))
    prepared: list[bool] = []
    from lossurf.surface.runners import LoopRunner
    original_prepare = LoopRunner.prepare

    def prepare(self, anchors_, share, compile_):
        prepared.append(compile_)
        # compile=True would really compile; the decision is what is tested here
        return original_prepare(self, anchors_, share, False)

    monkeypatch.setattr(LoopRunner, "prepare", prepare)
    ds = surface.plane(model, anchors, data, steps=6, chunk_points=6,
                       progress=False)
    assert seen == [36] and ds.attrs["compile"] is True
    assert prepared == [True] * 6  # every chunk used the grid's decision


def test_the_plan_survives_pickling_without_planning_again(monkeypatch):
    model, anchors, data = _data()
    ev = Evaluator(model, data, compile=False)
    first = ev.evaluate(anchors, np.eye(3))
    shipped = pickle.loads(pickle.dumps(ev))
    assert shipped.choice == ev.choice and shipped._runners == {}
    monkeypatch.setattr(Evaluator, "_want_compile", lambda *a: pytest.fail("planned again"))
    np.testing.assert_array_equal(shipped.evaluate(anchors, np.eye(3))["loss"], first["loss"])


def test_cuda_defaults_follow_the_measured_gpu_table():
    """Issue 10's H100/H200 table: K=32 beat K=8 on W1 and W3, the loop won on W2. The rule
    takes K=32, the timer tries the loop and K = 16, 32, 64."""
    cuda = torch.device("cuda")
    assert DEFAULT_K == 32
    w3 = rule_choice(model_facts(*_w3_like()), cuda)
    assert (w3.strategy, w3.k) == ("vmap", 32)
    assert rule_choice(model_facts(*_w2_like()), cuda).strategy == "loop"
    assert [(c.strategy, c.k) for c in candidates()] == [
        ("loop", 1), ("vmap", 16), ("vmap", 32), ("vmap", 64)]
    assert [c.k for c in candidates(32, largest_k=32)] == [1, 16, 32]


def test_k_is_bounded_by_the_free_memory():
    facts = model_facts(*_w3_like())  # 778 activation values per example
    per_point = 778 * 1024 * 4
    assert memory_k(facts, 1024, None) == 32 and memory_k(None, 1024, 10**6) == 32
    assert memory_k(facts, 1024, 4 * 32 * per_point) == 32  # a quarter of free memory holds 32
    assert memory_k(facts, 1024, 4 * 20 * per_point) == 16
    assert memory_k(facts, 1024, 4 * per_point) == 1
