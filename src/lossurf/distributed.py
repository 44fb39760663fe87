"""Picklable work items for distributed backends: one training run of an experiment as a task.

:func:`lossurf.engine.train_experiment` with a ``backend`` prepares the experiment directory in
the driver (config, manifest, every seed's shared initialization and minibatch-order hashes),
then maps a :class:`TrainRunTask` over the run names. Each task trains its run with
:func:`lossurf.engine.train_run`, exactly as the local path does, writing into the run's
directory.

Storage assumption: the experiment directory is on storage that the driver and every worker
mount at the same absolute path (NFS, a shared volume; on one machine any local path works).
Workers write checkpoints, metrics and resume states there themselves, so a worker that dies
mid-run is retried by the backend and the retry resumes the run from its last finished epoch
(bitwise identical to an uninterrupted run). Only the run's status and last metrics row travel
back to the driver. See ``docs/cluster.md``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossurf.config import DataSpec, ExperimentConfig
from lossurf.data.base import Dataset
from lossurf.errors import LossurfError
from lossurf.runs import ExperimentLayout

__all__ = ["TrainRunTask", "train_task"]

# Worker side: the data set of the last spec loaded in this process, so the runs of one
# experiment that land on the same worker load it once.
_DATA_CACHE: dict[str, Dataset] = {}


@dataclass(frozen=True)
class TrainRunTask:
    """Train one run of a prepared experiment: a picklable callable for ``Backend.map``.

    Work items are run names; the result is ``(run name, status record, last metrics row)``
    (the row is ``{"diverged": True}`` for a diverged run, ``{}`` for one already finished).

    Attributes:
        out: absolute path of the experiment directory (shared by driver and workers).
        config: the resolved config the driver validated and wrote there.
        dataset: the data set, when the caller supplied one; ``None`` makes each worker load
            it from ``config.data`` (read from shared storage, not sent through the driver).
        cwd: the driver's working directory, against which a relative ``data_dir`` resolves.
    """

    out: str
    config: ExperimentConfig
    dataset: Dataset | None = None
    cwd: str = "."

    def __call__(self, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        # Imported here: engine imports this module lazily, and the other way round would loop.
        from lossurf.engine import cpu_threads, train_run

        layout = ExperimentLayout(self.out)
        if not layout.config.is_file():
            raise LossurfError(
                f"the experiment directory {self.out} is not visible on worker "
                f"{socket.gethostname()}; put --out on storage that every node mounts at the "
                "same path (see docs/cluster.md)"
            )
        dataset = self.dataset if self.dataset is not None else self._load_data()
        last: dict[str, Any] = {}

        def keep_last(run: str, epoch: int, epochs: int, row: dict[str, Any]) -> None:
            last.clear()
            last.update(row)

        with cpu_threads(self.config):
            status = train_run(layout, self.config, name, dataset, report=keep_last)
        return name, status, dict(last)

    def _load_data(self) -> Dataset:
        from lossurf import data as data_module

        spec = self.config.data
        if spec.data_dir is not None and not Path(spec.data_dir).is_absolute():
            spec = spec.model_copy(update={"data_dir": Path(self.cwd) / spec.data_dir})
        key = _spec_key(spec)
        if key not in _DATA_CACHE:
            _DATA_CACHE.clear()
            _DATA_CACHE[key] = data_module.load(spec)
        return _DATA_CACHE[key]


def _spec_key(spec: DataSpec) -> str:
    return spec.model_dump_json()


def train_task(out: str | Path, config: ExperimentConfig, dataset: Dataset | None) -> TrainRunTask:
    """The task for ``config``'s runs in ``out``, with absolute paths for the workers."""
    return TrainRunTask(str(Path(out).resolve()), config, dataset, os.getcwd())
