"""How many CPU threads torch uses for a model.

Intra-op parallelism costs small models more than it saves: on a shared 2-core machine a
training step of a 6k-parameter CNN ran 60x slower with two threads than with one, and a ReLU
12.5 ms instead of 0.03 ms, because every parallel op waits for the second thread to be
scheduled. Models below :data:`SMALL_MODEL` parameters therefore run on one thread unless the
user says otherwise; larger ones keep torch's default.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["SMALL_MODEL", "threads_for", "torch_threads"]

SMALL_MODEL = 1_000_000


def threads_for(model: nn.Module, threads: int | None = None) -> int:
    """``threads`` if given, else 1 for a small model and torch's current setting otherwise."""
    if threads is not None:
        return threads
    size = sum(p.numel() for p in model.parameters())
    return 1 if size < SMALL_MODEL else torch.get_num_threads()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, restoring the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
