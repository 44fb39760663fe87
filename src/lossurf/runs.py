"""The on-disk layout of an experiment directory, and atomic reads and writes of it.

::

    OUT/
      experiment.yaml            resolved config (model options include what the data decided)
      manifest.json              lossurf/torch/python versions, the command, run names
      seeds/seed-<s>/init.safetensors   the one initialization of seed s, shared by its runs
      seeds/seed-<s>/orders.json        hash of every epoch's minibatch order, checked by each run
      runs/<run>/run.json        the run's spec, seed and name
      runs/<run>/metrics.csv     one row per epoch (epoch 0 = the initialization)
      runs/<run>/epoch-NNNN.safetensors, final.safetensors
      runs/<run>/status.json     running | finished | diverged, checkpoint hashes
      runs/<run>/resume.pt       training state at the last finished epoch (removed at the end)

Every write goes to a temporary file in the same directory and is renamed into place, so a
kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from lossurf.errors import LossurfError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "read_json",
    "save_weights",
    "load_weights",
    "file_hash",
    "ExperimentLayout",
    "MetricsLog",
]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    """Atomically write ``value`` as indented JSON."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LossurfError(f"{path} is corrupted ({error}); delete it and run again") from None


def save_weights(path: Path, state: Mapping[str, torch.Tensor]) -> str:
    """Atomically save a state dict as safetensors; returns the file's sha256."""
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}
    data = safetensors_save(tensors)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict; a missing or corrupted file gets a clear error."""
    if not path.is_file():
        raise LossurfError(f"checkpoint {path} does not exist; train the run first (lossurf train)")
    try:
        return dict(safetensors_load(path.read_bytes()))
    except (SafetensorError, ValueError, OSError) as error:
        raise LossurfError(
            f"checkpoint {path} is corrupted ({error}); delete it and run `lossurf train` again"
        ) from None


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ExperimentLayout:
    """Paths inside one experiment directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "experiment.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def seed_dir(self, seed: int) -> Path:
        return self.root / "seeds" / f"seed-{seed}"

    def init(self, seed: int) -> Path:
        return self.seed_dir(seed) / "init.safetensors"

    def orders(self, seed: int) -> Path:
        return self.seed_dir(seed) / "orders.json"

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / run

    def run_info(self, run: str) -> Path:
        return self.run_dir(run) / "run.json"

    def metrics(self, run: str) -> Path:
        return self.run_dir(run) / "metrics.csv"

    def status(self, run: str) -> Path:
        return self.run_dir(run) / "status.json"

    def resume_state(self, run: str) -> Path:
        return self.run_dir(run) / "resume.pt"

    def checkpoint(self, run: str, epoch: int | None) -> Path:
        """``epoch-NNNN.safetensors``, or ``final.safetensors`` for ``epoch=None``."""
        name = "final" if epoch is None else f"epoch-{epoch:04d}"
        return self.run_dir(run) / f"{name}.safetensors"

    def epochs_saved(self, run: str) -> list[int]:
        """Epochs with a saved ``epoch-NNNN`` checkpoint, ascending."""
        found = []
        for path in self.run_dir(run).glob("epoch-*.safetensors"):
            try:
                found.append(int(path.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(found)


class MetricsLog:
    """``metrics.csv`` of one run, rewritten atomically on every append.

    Rewriting the whole (small: one row per epoch) file keeps it consistent with the resume
    state: after a kill, rows past the last saved state are dropped on resume.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with path.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (left behind by a run killed after writing them)."""
        self.rows = [row for row in self.rows if int(row["epoch"]) <= last_epoch]

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append({column: row.get(column, "") for column in self.columns})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())
