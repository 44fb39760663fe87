"""The thread policy: usable cores less the share of them other processes keep busy."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lossurf import threads


@pytest.fixture(autouse=True)
def no_fixed_count(monkeypatch):
    """The suite fixes LOSSURF_THREADS=1 (conftest); these tests look at the policy itself."""
    monkeypatch.delenv("LOSSURF_THREADS", raising=False)


@pytest.fixture
def machine(monkeypatch):
    """Set the affinity, the machine's core count and the load average."""

    def set_(usable: int, cpus: int, load: float | None) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(usable)), raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: cpus)
        if load is None:
            def no_load():
                raise OSError("no load average")
            monkeypatch.setattr(os, "getloadavg", no_load, raising=False)
        else:
            monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)

    return set_


@pytest.mark.parametrize("usable, cpus, load, expected", [
    (2, 2, 1.0, 2),    # idle but for us: both cores
    (2, 2, 0.2, 2),    # load below our own process
    (2, 2, 2.0, 1),    # one other busy process
    (2, 2, 11.0, 1),   # the shared development machine: never below one
    (4, 4, 2.0, 3),
    (4, 16, 9.0, 2),   # 8 other tasks spread over 16 cores: half of our 4 are taken
    (8, 8, 1.0, 8),
])
def test_threads_follow_affinity_and_load(machine, usable, cpus, load, expected):
    machine(usable, cpus, load)
    assert threads.machine_threads() == expected
    assert threads.threads_for(nn.Linear(2, 2)) == expected


def test_no_load_average_uses_every_usable_core(machine):
    machine(3, 8, None)
    assert threads.machine_threads() == 3


def test_the_model_size_no_longer_decides(machine):
    machine(2, 2, 1.0)
    small, big = nn.Linear(2, 2), nn.Linear(1200, 1000)  # 6 vs 1.2M parameters
    assert threads.threads_for(small) == threads.threads_for(big) == 2
    assert threads.threads_for() == 2


def test_explicit_threads_win(machine):
    machine(2, 2, 11.0)
    assert threads.threads_for(nn.Linear(2, 2), 4) == 4


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _loaded(monkeypatch, guess: int = 1, usable: int = 2) -> None:
    import lossurf.surface.evaluate as evaluate

    monkeypatch.setattr(evaluate, "usable_cores", lambda: usable)
    monkeypatch.setattr(evaluate, "machine_threads", lambda: guess)
    monkeypatch.setattr(evaluate, "load_average", lambda: 11.0)


def _tiny():
    from _surface_models import TinyMLP, perturbed_states

    from lossurf.surface.evaluate import EvalData

    torch.manual_seed(0)
    model = TinyMLP()
    return model, perturbed_states(model, 2), EvalData(torch.randn(40, 48),
                                                       torch.randint(0, 5, (40,)),
                                                       "classification")


@pytest.mark.parametrize("fast", [1, 2])
def test_a_loaded_machine_times_both_counts_and_keeps_the_faster(monkeypatch, fast):
    import lossurf.surface as surface
    import lossurf.surface.evaluate as evaluate
    from lossurf.surface.evaluate import Evaluator

    _loaded(monkeypatch)
    now, used = [0.0], []
    original = Evaluator._evaluate_with

    def spy(self, *args):
        used.append(torch.get_num_threads())
        now[0] += 1.0 if torch.get_num_threads() == fast else 3.0
        assert args[3] is False or len(used) > 4  # timing passes run eager
        return original(self, *args)

    monkeypatch.setattr(Evaluator, "_evaluate_with", spy)
    monkeypatch.setattr(evaluate, "clock", lambda: now[0])
    before = torch.get_num_threads()
    model, anchors, data = _tiny()
    ds = surface.line(model, anchors[0], anchors[1], data, steps=40, chunk_points=8,
                      progress=False)
    assert ds.attrs["threads"] == fast
    assert ds.attrs["threads_reason"].startswith("timed (rule: 2 usable cores, load 11.0)")
    assert used[:4] == [1, 1, 2, 2]  # a warm-up and a timed pass at each count
    assert used[4:] == [fast] * 5  # every chunk ran at the chosen count
    assert torch.get_num_threads() == before  # restored after the call


def test_small_grids_and_quiet_machines_follow_the_rule(monkeypatch):
    import lossurf.surface as surface

    model, anchors, data = _tiny()
    _loaded(monkeypatch)
    ds = surface.line(model, anchors[0], anchors[1], data, steps=5, progress=False)
    assert ds.attrs["threads"] == 1 and ds.attrs["threads_reason"].startswith("rule: 2 usable")
    _loaded(monkeypatch, guess=2)
    ds = surface.line(model, anchors[0], anchors[1], data, steps=40, progress=False)
    assert ds.attrs["threads"] == 2 and ds.attrs["threads_reason"].startswith("rule")
    ds = surface.line(model, anchors[0], anchors[1], data, steps=40, progress=False, threads=1)
    assert ds.attrs["threads"] == 1 and ds.attrs["threads_reason"] == "requested"


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_a_bad_thread_count_is_one_clear_error(bad):
    from lossurf.errors import LossurfError
    from lossurf.surface.evaluate import Evaluator

    model, _, data = _tiny()
    with pytest.raises(LossurfError, match=r"threads must be a positive integer"):
        Evaluator(model, data, threads=bad)


def test_lossurf_threads_fixes_the_count(machine, monkeypatch):
    import lossurf.surface as surface

    machine(2, 2, 11.0)
    monkeypatch.setenv("LOSSURF_THREADS", "2")
    assert threads.threads_for(nn.Linear(2, 2)) == 2
    assert threads.threads_for(nn.Linear(2, 2), 3) == 3  # an explicit count still wins
    model, anchors, data = _tiny()
    ds = surface.line(model, anchors[0], anchors[1], data, steps=40, progress=False)
    assert ds.attrs["threads"] == 2 and ds.attrs["threads_reason"] == "LOSSURF_THREADS"


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5"])
def test_a_bad_lossurf_threads_is_one_clear_error(monkeypatch, bad):
    from lossurf.errors import LossurfError

    monkeypatch.setenv("LOSSURF_THREADS", bad)
    with pytest.raises(LossurfError, match=r"LOSSURF_THREADS must be a positive integer, got "
                                           + repr(bad).replace(".", r"\.") + "; set it"):
        threads.threads_for(nn.Linear(2, 2))


def test_a_thread_count_past_4_per_core_is_refused(monkeypatch):
    from lossurf.errors import LossurfError

    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("LOSSURF_THREADS", "8")
    assert threads.env_threads() == 8
    monkeypatch.setenv("LOSSURF_THREADS", "100000")
    with pytest.raises(LossurfError, match=r"LOSSURF_THREADS=100000 is more than 4 threads per "
                                           r"core of this machine \(2 cores\); set it to at most 8"):
        threads.threads_for(nn.Linear(2, 2))


def test_train_check_refuses_a_bad_lossurf_threads(cli, monkeypatch):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples/digits.yaml"
    monkeypatch.setenv("LOSSURF_THREADS", "abc")
    code, _, err = cli("train", example, "--check")
    assert code == 2 and "LOSSURF_THREADS must be a positive integer, got 'abc'" in err
    assert "Traceback" not in err


def test_a_resumed_store_keeps_its_decisions(monkeypatch, tmp_path):
    """The second part of a grid is computed with the first part's threads and strategy."""
    import lossurf.surface as surface

    model, anchors, data = _tiny()
    store = tmp_path / "line.zarr"
    _loaded(monkeypatch, guess=2)
    first = surface.line(model, anchors[0], anchors[1], data, steps=40, store=store,
                         progress=False)
    assert first.attrs["threads"] == 2
    _loaded(monkeypatch, guess=1)  # the machine is now loaded: the store's count is kept
    from lossurf.surface.evaluate import Evaluator

    seen = []
    monkeypatch.setattr(Evaluator, "provenance", property(
        lambda self: seen.append((self.threads, self.threads_reason)) or {"precision": "fp32"}))
    surface.line(model, anchors[0], anchors[1], data, steps=40, store=store, progress=False)
    assert seen[-1] == (2, "resumed")


def test_thread_timing_runs_a_sample_of_a_point(monkeypatch):
    """The loop times one statistics call and one evaluation batch per pass, not the whole
    point: four timing passes cost four batches, whatever the size of the data."""
    import lossurf.surface as surface
    from lossurf.surface.evaluate import Evaluator

    _loaded(monkeypatch)
    batches: list[int] = []
    original = Evaluator._sums

    def spy(self, outputs, y, ref):
        batches.append(len(y))
        return original(self, outputs, y, ref)

    monkeypatch.setattr(Evaluator, "_sums", spy)
    model, anchors, data = _tiny()
    ds = surface.line(model, anchors[0], anchors[1], data, steps=10, batch_size=8,
                      progress=False)
    assert ds.attrs["threads_reason"].startswith("timed")
    assert len(batches) == 4 + 10 * 5  # 4 timing passes of one batch, then 10 points x 5
