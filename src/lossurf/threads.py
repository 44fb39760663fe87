"""How many CPU threads torch uses: the cores this process may use, less the ones others keep busy.

Intra-op parallelism only pays when the second thread gets a core: on a 2-core machine loaded by
other processes a training step of a 6k-parameter CNN ran 60x slower with two threads than with
one (every parallel op waits for the second thread to be scheduled), while on the same machine
idle two threads evaluate a surface 1.3-2x faster than one, for small and large models alike. So
the count follows the machine, not the parameter count:

    usable = len(os.sched_getaffinity(0))              # the cores this process may run on
    others = max(0, load1 - 1) * usable / cpu_count    # runnable tasks of others, on our cores
    threads = clamp(round(usable - others), 1, usable)

``load1`` is the 1-minute load average (``os.getloadavg``), which counts this process itself
(hence the ``- 1``); it is spread evenly over the machine's cores. An idle 2-core machine gives
2 threads; one other busy process gives 1. The load average lags by up to a minute: a load that
starts mid-grid is not seen, which costs at most the difference between the two counts.

Under load the rule can also be wrong the other way: the scheduler shares a core per thread,
so a model of large operations (VGG on 32x32 images) gets more of a loaded machine with more
threads, while one of tiny operations waits for them. The surface evaluator therefore times
both counts on a point of the grid when they differ (:meth:`lossurf.surface.evaluate.Evaluator.plan`).

The environment variable ``LOSSURF_THREADS`` fixes the count for every command (after an
explicit ``threads``): convolutions round differently with different counts (~1e-7 relative),
so bitwise-reproducible results across machines and loads need one fixed count.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from lossurf.errors import LossurfError

__all__ = ["threads_for", "machine_threads", "torch_threads", "usable_cores", "load_average",
           "env_threads", "THREADS_ENV"]

#: Environment variable that fixes the thread count (unless a caller passes one).
THREADS_ENV = "LOSSURF_THREADS"


def env_threads() -> int | None:
    """The count ``LOSSURF_THREADS`` fixes, or None when it is unset or empty."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise LossurfError(f"{THREADS_ENV} must be a positive integer, got {value!r}; set it "
                           "to a thread count such as 1, or unset it")
    # more threads than this only oversubscribe the cores; a typo of 100000 threads would
    # exhaust the memory starting them
    most = 4 * (os.cpu_count() or 1)
    if int(value) > most:
        raise LossurfError(f"{THREADS_ENV}={value} is more than 4 threads per core of this "
                           f"machine ({os.cpu_count() or 1} cores); set it to at most {most}, "
                           "or unset it")
    return int(value)


def usable_cores() -> int:
    """How many cores this process may run on (its affinity mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux: every core
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average, or None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): assume idle
        return None


def machine_threads() -> int:
    """Threads worth using now: usable cores less the share others keep busy (module doc)."""
    usable = usable_cores()
    load = load_average()
    if load is None:
        return usable
    total = max(usable, os.cpu_count() or usable)
    others = max(0.0, load - 1.0) * usable / total
    return int(min(usable, max(1, round(usable - others))))


def threads_for(model: nn.Module | None = None, threads: int | None = None) -> int:
    """``threads`` if given, else ``LOSSURF_THREADS``, else :func:`machine_threads`.

    ``model`` is accepted for the callers that pass it and no longer decides anything: the
    measured cost of a second thread came from the machine's load, not from the model's size.
    """
    if threads is not None:
        return threads
    fixed = env_threads()
    return fixed if fixed is not None else machine_threads()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, restoring the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
