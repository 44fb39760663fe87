"""Reopen what ``lossurf train`` wrote: config, runs, models, weights, metrics.

End points are named with one notation everywhere (CLI and Python):

- ``init``: the shared initialization (``init@seed1`` where the experiment has several seeds);
- ``adam``: a run's final weights (``adam@seed1`` with several seeds);
- ``adam:epoch=10``: a run's checkpoint after epoch 10 (``adam:epoch=0`` is its initialization).

Every file is checked as it is read: weights and a finished run's metrics against the sha256
recorded when they were written (``status.json``, ``seeds/seed-N/init.json``). A damaged file is
a :class:`~lossurf.errors.LossurfError` naming it and the fix, which is always the same command:
``lossurf train DIR/experiment.yaml --out DIR`` resumes unfinished runs and trains again those
whose files are damaged (bitwise the same weights on CPU).
"""

from __future__ import annotations

import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import yaml

from lossurf.config import ExperimentConfig, parse_config
from lossurf.errors import LossurfError
from lossurf.runs import (
    ExperimentLayout,
    MetricsLog,
    file_hash,
    load_weights,
    read_bytes,
    read_json,
    read_status,
    train_command,
)

if TYPE_CHECKING:  # pandas is imported lazily: reading a config should stay cheap
    import pandas as pd

    from lossurf.data.base import Dataset

__all__ = ["Experiment", "Endpoint", "endpoint_attrs", "load_experiment"]

_ENDPOINT = re.compile(r"^(?P<run>[^:]+?)(?::epoch=(?P<epoch>\d+))?$")


@dataclass(frozen=True)
class Endpoint:
    """A resolved end point: its label, weights and provenance."""

    label: str
    run: str
    checkpoint: str
    path: Path
    sha256: str
    weights: dict[str, torch.Tensor]


def endpoint_attrs(endpoints: list[Endpoint]) -> dict[str, list[str]]:
    """Provenance attrs for a surface over ``endpoints``: labels, runs, checkpoints, files and
    their sha256, in anchor order."""
    return {
        "anchor_labels": [p.label for p in endpoints],
        "anchor_runs": [p.run for p in endpoints],
        "anchor_checkpoints": [p.checkpoint for p in endpoints],
        "anchor_files": [str(p.path) for p in endpoints],
        "anchor_file_sha256": [p.sha256 for p in endpoints],
    }


class Experiment:
    """A trained experiment directory (see :mod:`lossurf.runs` for the layout)."""

    def __init__(self, path: str | Path) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise LossurfError(f"experiment directory must be a path (str or Path), got {path!r}; "
                               "pass the --out directory of `lossurf train`")
        self.layout = ExperimentLayout(path)
        self.path = self.layout.root
        if not self.layout.config.is_file():
            raise LossurfError(
                f"{self.path} is not an experiment directory (no experiment.yaml); "
                "pass the --out directory of `lossurf train`"
            )
        fix = "restore it from the experiment's YAML file (the one passed to `lossurf train`)"
        try:
            raw = yaml.safe_load(read_bytes(self.layout.config, fix).decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "not valid YAML"
            raise LossurfError(f"{self.layout.config} is corrupted ({reason}); {fix}") from None
        self.config: ExperimentConfig = parse_config(raw, str(self.layout.config))
        #: The command that finishes the experiment or recreates its damaged files.
        self.repair = train_command(self.path)

    @property
    def runs(self) -> list[str]:
        """Names of every run, one per optimizer and seed (``adam`` or ``adam@seed1``)."""
        return self.config.run_names()

    def seed_of(self, run: str) -> int:
        """The seed of ``run``."""
        return self._entry(run)[2]

    def _entry(self, run: str):
        for entry in self.config.iter_runs():
            if entry[0] == run:
                return entry
        raise LossurfError(f"unknown run {run!r}; this experiment has {self.runs}")

    def model(self) -> torch.nn.Module:
        """A fresh module of the experiment's architecture (weights: load them with
        :meth:`weights`)."""
        from lossurf import models

        return models.build(self.config.model)

    def dataset(self) -> "Dataset":
        """The experiment's data set (loaded from its spec)."""
        from lossurf import data

        return data.load(self.config.data)

    def status(self, run: str) -> dict:
        """``{"status": "finished" | "diverged" | "running", ...}`` or ``not started``."""
        self._entry(run)
        path = self.layout.status(run)
        return read_status(self.layout, run) if path.is_file() else {"status": "not started"}

    def checkpoint_path(self, run: str, which: Literal["init", "final"] | int = "final") -> Path:
        """Path of a run's weights: ``"init"``, ``"final"`` or an epoch number, after checking
        the file against its recorded sha256."""
        path, digest = self._checkpoint(run, which)
        if digest is not None and file_hash(path) != digest:
            raise self._corrupted(path)
        return path

    def _corrupted(self, path: Path) -> LossurfError:
        return LossurfError(
            f"checkpoint {path} is corrupted (its sha256 differs from the one recorded when it was "
            f"written); {self.repair} recreates it"
        )

    def _init(self, seed: int) -> tuple[Path, str | None]:
        """A seed's initialization file and its recorded sha256."""
        path = self.layout.init(seed)
        if not path.is_file():
            raise LossurfError(f"the initialization {path} is missing; {self.repair} recreates it")
        return path, self._init_hash(seed)

    def _init_hash(self, seed: int) -> str | None:
        record = self.layout.init_record(seed)
        if not record.is_file():
            return None  # an experiment written before init.json existed
        digest = read_json(record, f"delete it and run {self.repair} to record it again").get("sha256")
        if not isinstance(digest, str):
            raise LossurfError(f"{record} is corrupted (no sha256 string); delete it and run {self.repair}")
        return digest

    def _checkpoint(self, run: str, which: Literal["init", "final"] | int) -> tuple[Path, str | None]:
        """A run's weights file and its recorded sha256 (None: none was recorded)."""
        _, _, seed = self._entry(run)
        if isinstance(which, numbers.Integral) and not isinstance(which, bool):
            which = int(which)  # numpy integers too
        elif which not in ("init", "final"):  # a bool is no epoch (True == 1, False == 0)
            raise LossurfError(f"checkpoint {which!r} is not 'init', 'final' or an epoch number")
        if which == "init" or which == 0:
            return self._init(seed)
        if which == "final":
            status = self.status(run)
            if status["status"] == "diverged":
                raise LossurfError(
                    f"run {run!r} diverged at epoch {status['diverged_epoch']} and has no final "
                    f"weights; use an earlier epoch ({run}:epoch=N) or lower its learning rate"
                )
            path = self.layout.checkpoint(run, None)
            if status["status"] != "finished":
                raise LossurfError(
                    f"run {run!r} has not finished (status: {status['status']}); "
                    f"{self.repair} finishes it"
                )
            if not path.is_file():
                raise LossurfError(
                    f"run {run!r} is recorded as finished but {path} is missing; "
                    f"{self.repair} recreates it"
                )
            return path, status["checkpoints"].get(path.name)
        if not isinstance(which, int) or which < 0:
            raise LossurfError(f"checkpoint {which!r} is not 'init', 'final' or an epoch number")
        path = self.layout.checkpoint(run, which)
        if not path.is_file():
            saved = self.layout.epochs_saved(run)
            raise LossurfError(
                f"run {run!r} has no checkpoint for epoch {which}; saved epochs: {saved or 'none'}"
                " (checkpoint_every sets the stride)"
            )
        digest = self.status(run).get("checkpoints", {}).get(path.name)
        if digest is None:
            raise LossurfError(
                f"checkpoint {path} is not recorded in the run's status.json (the run was "
                f"interrupted while writing it); {self.repair} finishes the run"
            )
        return path, digest

    def weights(self, run: str, which: Literal["init", "final"] | int = "final") -> dict[str, torch.Tensor]:
        """A run's state dict at ``"init"``, ``"final"`` or after epoch ``which``, checked
        against its recorded sha256."""
        return self._load(*self._checkpoint(run, which))

    def _load(self, path: Path, digest: str | None) -> dict[str, torch.Tensor]:
        if digest is not None and file_hash(path) != digest:
            raise self._corrupted(path)
        weights = load_weights(path, fix=f"{self.repair} recreates it")
        self._check_architecture(path, weights)
        return weights

    def _check_architecture(self, path: Path, weights: dict[str, torch.Tensor]) -> None:
        """Refuse weights that are not of this experiment's model, naming the file (a file
        copied in from elsewhere, with its record edited to match)."""
        if not hasattr(self, "_shapes"):
            self._shapes = {k: tuple(v.shape) for k, v in self.model().state_dict().items()}
        problem = next((f"key {k!r} is missing" for k in self._shapes if k not in weights), None)
        problem = problem or next((f"it has a key {k!r} the model lacks" for k in weights
                                   if k not in self._shapes), None)
        problem = problem or next(
            (f"key {k!r} is {tuple(weights[k].shape)}, not {shape}"
             for k, shape in self._shapes.items() if tuple(weights[k].shape) != shape), None)
        if problem:
            raise LossurfError(f"{path} holds weights of another architecture than this "
                               f"experiment's {self.config.model.name} ({problem}); delete it: "
                               f"{self.repair} recreates it")

    def metrics(self, run: str) -> "pd.DataFrame":
        """The run's per-epoch metrics table (epoch 0 is the initialization)."""
        import pandas as pd

        self._entry(run)
        path = self.layout.metrics(run)
        if not path.is_file():
            raise LossurfError(f"run {run!r} has no metrics yet; train it with `lossurf train`")
        status = self.status(run)
        log = MetricsLog.read(path, fix=f"{self.repair} restores or recreates it")
        recorded = status.get("metrics_sha256")
        if recorded is not None and log.sha256 != recorded:
            raise LossurfError(
                f"{path} is corrupted (its sha256 differs from the one recorded when it was "
                f"written); {self.repair} recreates it (the run is trained again)"
            )
        return log.frame()

    def init_label(self, seed: int) -> str:
        """The end-point name of a seed's initialization."""
        return "init" if len(self.config.seeds) == 1 else f"init@seed{seed}"

    def resolve(self, endpoint: str) -> Endpoint:
        """Resolve an end-point name (``init``, ``adam``, ``adam:epoch=10``) to its weights."""
        if not isinstance(endpoint, str):
            example = self.runs[0] if self.runs else "adam"
            raise LossurfError(f"an end point is a name such as {example!r} or "
                               f"'{example}:epoch=1', got {endpoint!r}")
        text = endpoint.strip()
        init_names = {self.init_label(s): s for s in self.config.seeds}
        if text in init_names:
            return self._endpoint(text, text, "init", *self._init(init_names[text]))
        match = _ENDPOINT.match(text)
        if not match:
            raise LossurfError(
                f"end point {endpoint!r} is not of the form RUN or RUN:epoch=N "
                f"(runs: {self.runs}; initializations: {sorted(init_names)})"
            )
        run = match["run"]
        if run not in self.runs:
            raise LossurfError(
                f"unknown end point {endpoint!r}{self._seed_hint(run)}; use one of "
                f"{sorted(init_names) + self.runs}, optionally with :epoch=N"
            )
        which: Literal["final"] | int = "final" if match["epoch"] is None else int(match["epoch"])
        path, digest = self._checkpoint(run, which)
        checkpoint = "final" if which == "final" else ("init" if which == 0 else f"epoch={which}")
        return self._endpoint(text, run, checkpoint, path, digest)

    def _seed_hint(self, name: str) -> str:
        """Why a name with ``@seed`` is unknown: one seed (names carry none), or another seed."""
        if "@" not in name:
            return ""
        seeds = list(self.config.seeds)
        if len(seeds) == 1:
            return f" (this experiment has one seed, {seeds[0]}: its end points carry no @seed)"
        return f" (this experiment's seeds are {seeds}, written @seed{seeds[0]} and so on)"

    def _endpoint(self, label: str, run: str, checkpoint: str, path: Path, digest: str | None) -> Endpoint:
        weights = self._load(path, digest)
        return Endpoint(label, run, checkpoint, path, digest or file_hash(path), weights)


def load_experiment(path: str | Path) -> Experiment:
    """Reopen an experiment directory written by ``lossurf train``."""
    return Experiment(path)
