"""Progress bars (rich) for the long loops: training runs and surface grids.

The display is the last thing that may stop a long run, so it formats defensively: a metrics
row can come from a live epoch (floats), from ``metrics.csv`` of a resumed run (strings, in
older files or other writers), from a diverged epoch (NaN, or only ``{"diverged": True}``) or
be empty; every one of them renders, none raises.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["training_progress", "format_number", "is_diverged"]

#: What the display shows for a value that is missing or not a number.
MISSING = "-"


def format_number(value: Any, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec`` if it reads as a number, else ``"-"``.

    Numbers given as strings (``"0.25"``, read back from CSV) are parsed; NaN and infinities
    print as ``nan``/``inf``/``-inf``; ``None``, ``""``, booleans and anything else that is not a
    number print as ``"-"``.
    """
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        return MISSING
    if not math.isfinite(number):
        return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
    try:
        return format(number, spec)
    except ValueError:  # a spec that is not a float spec: fall back to the shortest repr
        return repr(number)


def is_diverged(row: Mapping[str, Any]) -> bool:
    """Whether a metrics row marks a diverged run (``True``, or ``"True"``/``"1"`` from a file)."""
    flag = row.get("diverged", False)
    if isinstance(flag, str):
        return flag.strip().lower() in ("true", "1", "yes")
    return bool(flag)


def _as_int(value: Any, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return default


@contextmanager
def training_progress(enabled: bool = True, console: Console | None = None) -> Iterator[Any]:
    """A reporter for :func:`lossurf.engine.train_experiment`: one bar per run showing the
    epoch, the training loss and accuracy. Yields ``None`` when disabled.

    Args:
        enabled: show the bars (default True).
        console: where to draw (default: a rich console on stderr).
    """
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  loss {task.fields[loss]}  acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
    )
    tasks: dict[str, Any] = {}

    def report(run: str, epoch: Any, epochs: Any, row: Mapping[str, Any] | None) -> None:
        row = row if isinstance(row, Mapping) else {}
        total = max(_as_int(epochs, 0), 0)
        if run not in tasks:
            tasks[run] = progress.add_task(str(run), total=total or None, loss=MISSING, acc=MISSING)
        if is_diverged(row):
            progress.update(tasks[run], completed=total, loss="diverged", acc=MISSING)
            return
        progress.update(
            tasks[run],
            completed=min(max(_as_int(epoch, 0), 0), total) if total else 0,
            loss=format_number(row.get("train_loss"), ".4f"),
            acc=format_number(row.get("train_accuracy"), ".3f"),
        )

    with progress:
        yield report
