"""The ``lossurf`` command: a thin typer layer over the library.

User errors (:class:`~lossurf.errors.LossurfError`) print one line and exit with code 2; an
interrupt exits with code 130 and a reminder that running the same command again resumes.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from lossurf.errors import EXIT_USER_ERROR, LossurfError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Loss surfaces of deep networks: train with many optimizers from one initialization, "
    "then measure and draw the loss between the weights they reach.",
)


@contextmanager
def _resumable() -> Iterator[None]:
    """Turn Ctrl-C into exit code 130 and a reminder that the same command resumes."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; run the same command again to resume where it stopped", err=True)
        raise typer.Exit(130) from None


@app.callback()
def _root() -> None:
    """Loss surfaces of deep networks (see `lossurf COMMAND --help`)."""


@app.command()
def train(
    experiment: Path = typer.Argument(..., help="Experiment YAML file (see examples/digits.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment directory to write (or resume)."),
    run: Optional[list[str]] = typer.Option(None, "--run", help="Train only these runs (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Override data.data_dir."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the config's device (cpu, cuda)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per run."),
) -> None:
    """Train every run of EXPERIMENT into OUT; running it again resumes what was interrupted."""
    from lossurf.config import load_config
    from lossurf.engine import train_experiment
    from lossurf.progress import training_progress

    config = load_config(experiment)
    if data_dir is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"data_dir": data_dir})})
    if device is not None:
        config = config.model_copy(update={"device": device})
    with _resumable(), training_progress(progress) as report:
        statuses = train_experiment(config, out, runs=run, report=report, command=" ".join(sys.argv))
    for name, status in statuses.items():
        detail = f" at epoch {status['diverged_epoch']}" if status["status"] == "diverged" else ""
        typer.echo(f"{name:<28} {status['status']}{detail}")
    typer.echo(f"results in {out}")


def main() -> None:
    """Entry point of the ``lossurf`` console script."""
    try:
        app()
    except LossurfError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
