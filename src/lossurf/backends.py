"""Where work runs: a tiny ``Backend`` protocol and the in-process ``LocalBackend``.

A backend maps a function over work items and yields the results *as they complete* (in any
order), so the caller can persist each result at once. Work items and the function must be
picklable (plain tuples and module-level callables or dataclasses) so that a distributed
backend (Ray, added later; only this module may import ray) can ship them to workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

from lossurf.errors import LossurfError

__all__ = ["Backend", "LocalBackend", "BACKENDS", "make_backend"]

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class Backend(Protocol):
    """Runs ``fn`` on every item and yields the results as they complete."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in completion order (not necessarily item order)."""
        ...


class LocalBackend:
    """Runs every item in this process, one after the other, in order."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in order; stop at the first exception."""
        for item in items:
            yield fn(item)

    def __repr__(self) -> str:
        return "LocalBackend()"


#: Registered backends by name; ``make_backend`` builds one.
BACKENDS: dict[str, Callable[..., Any]] = {"local": LocalBackend}


def make_backend(name: str = "local", **options: Any) -> Backend:
    """Build a registered backend by name.

    Args:
        name: a key of :data:`BACKENDS` (default ``local``).
        **options: passed to the backend's constructor.

    Returns:
        The backend instance.
    """
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise LossurfError(
            f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}"
        ) from None
    return factory(**options)
