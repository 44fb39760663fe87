"""The on-disk layout of an experiment directory, and atomic, checked reads and writes of it.

::

    OUT/
      experiment.yaml            resolved config (model options include what the data decided)
      manifest.json              lossurf/torch/python versions, the command, run names
      .lossurf.lock              the writer's lock (see :mod:`lossurf.locks`)
      seeds/seed-<s>/init.safetensors   the one initialization of seed s, shared by its runs
      seeds/seed-<s>/init.json          sha256 of init.safetensors, recorded when it was written
      seeds/seed-<s>/orders.json        hash of each epoch's minibatch order, recorded when an
                                        epoch is first reached and checked by every run
      runs/<run>/run.json        the run's spec, seed and name
      runs/<run>/metrics.csv     one row per epoch (epoch 0 = the initialization)
      runs/<run>/epoch-NNNN.safetensors, final.safetensors
      runs/<run>/status.json     running | finished | diverged, checkpoint and metrics sha256
      runs/<run>/resume.pt       training state at the last finished epoch (removed at the end)

Every write goes to a temporary file ``.NAME.XXXXXXXX.tmp`` in the same directory and is renamed
into place, so a kill leaves either the old file or the new one, never half of one; the
temporary files a kill leaves behind are removed by :func:`remove_temporaries`. Every read turns
a damaged file into one :class:`~lossurf.errors.LossurfError` naming the file and the fix.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
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
    "read_bytes",
    "read_json",
    "save_weights",
    "load_weights",
    "file_hash",
    "remove_temporaries",
    "ensure_directory",
    "check_writable",
    "train_command",
    "read_status",
    "find_damage",
    "checkpoint_damage",
    "metrics_columns",
    "ExperimentLayout",
    "MetricsLog",
]

# The fix for a full, read-only or otherwise unwritable location, by errno.
_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full; free some space or pass an --out on another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or pass an --out on another disk",
    errno.EROFS: "the file system is read-only; pass an --out on a writable disk",
    errno.EACCES: "permission denied; pass an --out you may write to",
    errno.EPERM: "permission denied; pass an --out you may write to",
    errno.ENOTDIR: "a file is in the way of a directory; pass an --out that is a directory",
    errno.EEXIST: "a file is in the way of a directory; pass an --out that is a directory",
    errno.EISDIR: "a directory is in the way of a file; move it away or pass another --out",
}

# ``tempfile`` names: prefix, 8 characters of this alphabet, suffix.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# Checkpoint file names recorded in status.json (nothing outside the run directory).
_CHECKPOINT = re.compile(r"^(final|epoch-\d{4,})\.safetensors$")


def _write_error(path: Path, error: OSError) -> LossurfError:
    """One line for an OSError while writing ``path``: what the errno means, and the fix."""
    meaning = error.strerror or os.strerror(error.errno or 0) or str(error)
    fix = _WRITE_FIXES.get(error.errno or 0, "check the disk and pass a writable --out")
    return LossurfError(f"cannot write {path} ({meaning}): {fix}")


def ensure_directory(path: str | Path, what: str = "--out") -> Path:
    """Create the output directory ``path`` (and its parents) unless it exists; a file in its
    place, or a location that cannot be written, is one :class:`LossurfError` with the fix."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LossurfError(f"{what} {path} is a file, not a directory; pass the path of a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(path, error) from None
    return path


def check_writable(directory: str | Path, fix: str) -> None:
    """Refuse, before any work, a ``directory`` this process cannot write into (created if
    missing): one :class:`LossurfError` with the cause and ``fix``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        meaning = error.strerror or os.strerror(error.errno or 0) or str(error)
        raise LossurfError(f"cannot write into {directory} ({meaning}); {fix}") from None


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    try:  # Linux reports the umask without changing it (os.umask would, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    The file gets the mode a plain ``open()`` would give it (0o666 less the umask). A write that
    fails (full or read-only disk, no permission, a file where a directory should be) leaves the
    old file in place and raises a :class:`LossurfError` naming the path and the cause.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode())  # mkstemp creates 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise _write_error(path, error) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    """Atomically write ``value`` as indented JSON."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_bytes(path: Path, fix: str = "delete it and run again") -> bytes:
    """A file's bytes; an unreadable file is a :class:`LossurfError` ending with ``fix``."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise LossurfError(f"cannot read {path} ({error.strerror or error}); {fix}") from None


def read_json(path: Path, fix: str = "delete it and run again", expect: type = dict) -> Any:
    """Read a JSON file written by :func:`write_json`.

    Args:
        path: the file.
        fix: what the user should do when it is damaged (ends the message).
        expect: the type of the top-level value (default ``dict``).

    Raises:
        LossurfError: unreadable, not UTF-8, not JSON, or not an ``expect``.
    """
    data = read_bytes(path, fix)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise LossurfError(f"{path} is corrupted (not UTF-8 text); {fix}") from None
    except json.JSONDecodeError as error:
        raise LossurfError(f"{path} is corrupted ({error}); {fix}") from None
    if not isinstance(value, expect):
        raise LossurfError(
            f"{path} is corrupted (holds a {type(value).__name__}, not a {expect.__name__}); {fix}"
        )
    return value


def save_weights(path: Path, state: Mapping[str, torch.Tensor]) -> str:
    """Atomically save a state dict as safetensors; returns the file's sha256."""
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}
    data = safetensors_save(tensors)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_weights(
    path: Path, sha256: str | None = None, fix: str = "delete it and run `lossurf train` again"
) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict, checking its sha256 when one is given.

    Raises:
        LossurfError: the file is missing, is not safetensors, or does not match ``sha256``
            (bytes flipped inside a well-formed file); the message ends with ``fix``.
    """
    path = Path(path)
    if not path.is_file():
        raise LossurfError(f"checkpoint {path} does not exist; train the run first (lossurf train)")
    data = read_bytes(path, fix)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise LossurfError(
            f"checkpoint {path} is corrupted (its sha256 differs from the one recorded when it "
            f"was written); {fix}"
        )
    try:
        return dict(safetensors_load(data))
    except (SafetensorError, ValueError, OSError) as error:
        raise LossurfError(f"checkpoint {path} is corrupted ({error}); {fix}") from None


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(read_bytes(path)).hexdigest()


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXXXXXX.tmp``) that killed writers left in
    ``directory`` (not below it); returns what was removed.

    Call it only while holding the directory's lock: a live writer's temporary file looks the
    same."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for path in Path(directory).iterdir():
        if _TEMPORARY.match(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                raise _write_error(path, error) from None
    return removed


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

    def init_record(self, seed: int) -> Path:
        """``init.json``: the sha256 of ``init.safetensors``, written with it."""
        return self.seed_dir(seed) / "init.json"

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

    def writable_dirs(self) -> list[Path]:
        """Every directory that :func:`atomic_write_bytes` writes into (for cleaning)."""
        dirs = [self.root]
        for parent in (self.root / "seeds", self.root / "runs"):
            if parent.is_dir():
                dirs += sorted(p for p in parent.iterdir() if p.is_dir())
        return dirs


_INT_COLUMNS = ("epoch", "gradient_evaluations")
_TEXT_COLUMNS = ("optimizer", "order_hash", "precision")
#: Columns added after the first release: ``eval_time`` and ``checkpoint_time`` (seconds of
#: the epoch spent evaluating its row and writing its checkpoint and resume state, beside the
#: cumulative training-step ``wall_time``) and the training ``precision``. Files written
#: before them lack them and still load.
_LATER_COLUMNS = ("eval_time", "checkpoint_time", "precision")


def metrics_columns(language_model: bool = False, *, legacy: bool = False) -> list[str]:
    """The columns of ``metrics.csv``, in order (language models add perplexities);
    ``legacy``: those of files written before the timing and precision columns."""
    columns = ["epoch", "optimizer", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    if language_model:
        columns += ["train_perplexity", "test_perplexity"]
    columns += ["batch_loss", "distance_from_init", "gradient_evaluations", "wall_time", "order_hash"]
    return columns if legacy else columns + list(_LATER_COLUMNS)


def _typed(column: str, text: str) -> Any:
    """A CSV cell as its type: ints for counts, text for names and hashes, floats otherwise
    (an empty cell is NaN; ``nan`` stays NaN)."""
    if column in _TEXT_COLUMNS:
        return text
    if column in _INT_COLUMNS:
        return int(text)
    return float(text) if text != "" else math.nan


class MetricsLog:
    """``metrics.csv`` of one run, rewritten atomically on every append.

    The rows live in memory (and, for a run in progress, in its resume state): the file is a
    copy of them, so a damaged file is restored from the resume state instead of losing rows.
    """

    FIX = "run `lossurf train` again: it restores or recreates the file"

    def __init__(self, path: Path, columns: list[str], rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.columns = columns
        self.rows: list[dict[str, Any]] = [dict(row) for row in rows or []]
        self.sha256: str | None = None

    @classmethod
    def read(cls, path: Path, fix: str = FIX) -> "MetricsLog":
        """Read a ``metrics.csv`` back with typed values.

        Raises:
            LossurfError: the file is unreadable, not UTF-8, has another header, or a row does
                not parse; the message names the file and ends with ``fix``.
        """
        data = read_bytes(path, fix)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise LossurfError(f"{path} is corrupted (not UTF-8 text); {fix}") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        known = [metrics_columns(lm, legacy=old) for lm in (False, True) for old in (False, True)]
        if header not in known:
            raise LossurfError(f"{path} is corrupted (its header is not that of a metrics file); {fix}")
        rows = []
        for number, cells in enumerate(reader, start=2):
            try:
                if len(cells) != len(header):
                    raise ValueError(f"{len(cells)} cells, expected {len(header)}")
                rows.append({c: _typed(c, cell) for c, cell in zip(header, cells)})
            except ValueError as error:
                raise LossurfError(f"{path} is corrupted (line {number}: {error}); {fix}") from None
        log = cls(path, header, rows)
        log.sha256 = hashlib.sha256(data).hexdigest()
        return log

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (left behind by a run killed after writing them)."""
        self.rows = [row for row in self.rows if row["epoch"] <= last_epoch]

    def append(self, row: Mapping[str, Any]) -> None:
        """Add a row and rewrite the file."""
        self.rows.append({column: row.get(column, "") for column in self.columns})
        self.write()

    def write(self) -> None:
        """Rewrite the file from the rows in memory; :attr:`sha256` is then its hash."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        data = buffer.getvalue().encode()
        atomic_write_bytes(self.path, data)
        self.sha256 = hashlib.sha256(data).hexdigest()

    def frame(self) -> "Any":
        """The rows as a pandas DataFrame (ints, floats and strings as typed)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)


def train_command(root: Path) -> str:
    """The command that resumes, finishes or repairs the experiment in ``root``."""
    return f"`lossurf train {root / 'experiment.yaml'} --out {root}`"


def read_status(layout: ExperimentLayout, run: str) -> dict[str, Any]:
    """A run's ``status.json``, checked: a dict with a known ``status``, an int ``epochs_done``
    and ``checkpoints`` mapping file names to sha256 strings."""
    path = layout.status(run)
    fix = f"delete it and run {train_command(layout.root)}: the run resumes or is trained again"
    status = read_json(path, fix)
    checkpoints = status.get("checkpoints", {})
    if (
        status.get("status") not in ("running", "finished", "diverged")
        or not isinstance(status.get("epochs_done"), int)
        or (status["status"] == "diverged" and not isinstance(status.get("diverged_epoch"), int))
        or not isinstance(checkpoints, dict)
        or not all(_CHECKPOINT.match(str(k)) and isinstance(v, str) for k, v in checkpoints.items())
        or not isinstance(status.get("metrics_sha256", ""), str)
        or not (isinstance(status.get("threads", 1), int) and status.get("threads", 1) >= 1)
    ):
        raise LossurfError(f"{path} is corrupted (not a run status record); {fix}")
    return status


def find_damage(layout: ExperimentLayout, run: str, status: dict[str, Any]) -> str | None:
    """What is wrong with the files of a finished or diverged run (None: they are intact):
    a recorded checkpoint or ``metrics.csv`` missing or not matching its recorded sha256."""
    checkpoints = status.get("checkpoints", {})
    if status["status"] == "finished" and "final.safetensors" not in checkpoints:
        return "its status.json records no final.safetensors"
    broken = checkpoint_damage(layout, run, checkpoints)
    if broken:
        return broken
    metrics = layout.metrics(run)
    if not metrics.is_file():
        return "metrics.csv is missing"
    if "metrics_sha256" in status and file_hash(metrics) != status["metrics_sha256"]:
        return "metrics.csv differs from the sha256 recorded when it was written"
    return None


def checkpoint_damage(layout: ExperimentLayout, run: str, checkpoints: Mapping[str, str]) -> str | None:
    """The first of a run's recorded checkpoints (file name -> sha256) that is missing or
    differs from its hash, described; None when all are intact."""
    for name, digest in sorted(checkpoints.items()):
        path = layout.run_dir(run) / name
        if not path.is_file():
            return f"{name} is missing"
        if file_hash(path) != digest:
            return f"{name} differs from the sha256 recorded when it was written"
    return None
