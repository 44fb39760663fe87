"""The thread policy: usable cores less the share of them other processes keep busy."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lossurf import threads


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
