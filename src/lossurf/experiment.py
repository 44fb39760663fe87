"""Reopen what ``lossurf train`` wrote: config, runs, models, weights, metrics.

End points are named with one notation everywhere (CLI and Python):

- ``init``: the shared initialization (``init@seed1`` where the experiment has several seeds);
- ``adam``: a run's final weights (``adam@seed1`` with several seeds);
- ``adam:epoch=10``: a run's checkpoint after epoch 10 (``adam:epoch=0`` is its initialization).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import yaml

from lossurf.config import ExperimentConfig, parse_config
from lossurf.errors import LossurfError
from lossurf.runs import ExperimentLayout, file_hash, load_weights, read_json

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
        self.layout = ExperimentLayout(path)
        self.path = self.layout.root
        if not self.layout.config.is_file():
            raise LossurfError(
                f"{self.path} is not an experiment directory (no experiment.yaml); "
                "pass the --out directory of `lossurf train`"
            )
        raw = yaml.safe_load(self.layout.config.read_text())
        self.config: ExperimentConfig = parse_config(raw, str(self.layout.config))

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
        return read_json(path) if path.is_file() else {"status": "not started"}

    def checkpoint_path(self, run: str, which: Literal["init", "final"] | int = "final") -> Path:
        """Path of a run's weights: ``"init"``, ``"final"`` or an epoch number."""
        _, _, seed = self._entry(run)
        if which == "init" or which == 0:
            return self.layout.init(seed)
        if which == "final":
            status = self.status(run)
            if status["status"] == "diverged":
                raise LossurfError(
                    f"run {run!r} diverged at epoch {status['diverged_epoch']} and has no final "
                    f"weights; use an earlier epoch ({run}:epoch=N) or lower its learning rate"
                )
            path = self.layout.checkpoint(run, None)
            if not path.is_file():
                raise LossurfError(
                    f"run {run!r} has not finished (status: {status['status']}); "
                    "run `lossurf train` again to finish it"
                )
            return path
        if not isinstance(which, int) or which < 0:
            raise LossurfError(f"checkpoint {which!r} is not 'init', 'final' or an epoch number")
        path = self.layout.checkpoint(run, which)
        if not path.is_file():
            saved = self.layout.epochs_saved(run)
            raise LossurfError(
                f"run {run!r} has no checkpoint for epoch {which}; saved epochs: {saved or 'none'}"
                " (checkpoint_every sets the stride)"
            )
        return path

    def weights(self, run: str, which: Literal["init", "final"] | int = "final") -> dict[str, torch.Tensor]:
        """A run's state dict at ``"init"``, ``"final"`` or after epoch ``which``."""
        return load_weights(self.checkpoint_path(run, which))

    def metrics(self, run: str) -> "pd.DataFrame":
        """The run's per-epoch metrics table (epoch 0 is the initialization)."""
        import pandas as pd

        self._entry(run)
        path = self.layout.metrics(run)
        if not path.is_file():
            raise LossurfError(f"run {run!r} has no metrics yet; train it with `lossurf train`")
        return pd.read_csv(path)

    def init_label(self, seed: int) -> str:
        """The end-point name of a seed's initialization."""
        return "init" if len(self.config.seeds) == 1 else f"init@seed{seed}"

    def resolve(self, endpoint: str) -> Endpoint:
        """Resolve an end-point name (``init``, ``adam``, ``adam:epoch=10``) to its weights."""
        text = endpoint.strip()
        init_names = {self.init_label(s): s for s in self.config.seeds}
        if text in init_names:
            path = self.layout.init(init_names[text])
            return Endpoint(text, text, "init", path, file_hash(path), load_weights(path))
        match = _ENDPOINT.match(text)
        if not match:
            raise LossurfError(
                f"end point {endpoint!r} is not of the form RUN or RUN:epoch=N "
                f"(runs: {self.runs}; initializations: {sorted(init_names)})"
            )
        run = match["run"]
        if run not in self.runs:
            raise LossurfError(
                f"unknown end point {endpoint!r}; use one of {sorted(init_names) + self.runs}, "
                "optionally with :epoch=N"
            )
        which: Literal["final"] | int = "final" if match["epoch"] is None else int(match["epoch"])
        path = self.checkpoint_path(run, which)
        checkpoint = "final" if which == "final" else ("init" if which == 0 else f"epoch={which}")
        return Endpoint(text, run, checkpoint, path, file_hash(path), load_weights(path))


def load_experiment(path: str | Path) -> Experiment:
    """Reopen an experiment directory written by ``lossurf train``."""
    return Experiment(path)
