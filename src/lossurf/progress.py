"""Progress bars (rich) for the long loops: training runs and surface grids."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["training_progress"]


@contextmanager
def training_progress(enabled: bool = True) -> Iterator[Any]:
    """A reporter for :func:`lossurf.engine.train_experiment`: one bar per run showing the
    epoch, the training loss and accuracy. Yields ``None`` when disabled."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  loss {task.fields[loss]}  acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    tasks: dict[str, Any] = {}

    def report(run: str, epoch: int, epochs: int, row: dict[str, Any]) -> None:
        if run not in tasks:
            tasks[run] = progress.add_task(run, total=epochs, loss="-", acc="-")
        if row.get("diverged"):
            progress.update(tasks[run], completed=epochs, loss="diverged", acc="-")
            return
        progress.update(
            tasks[run],
            completed=epoch,
            loss=f"{row['train_loss']:.4f}",
            acc=f"{row['train_accuracy']:.3f}",
        )

    with progress:
        yield report
