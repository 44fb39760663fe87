"""Check that an experiment can start, without training or writing anything.

``lossurf train EXP.yaml --check`` runs :func:`check_experiment`: the device exists here, the
data loads, the model builds with the data's shapes, and every optimizer (and the one each run
switches to) builds on the model's parameters — everything that would otherwise fail minutes
into a run or after the directory was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lossurf.config import ExperimentConfig
from lossurf.errors import LossurfError

if TYPE_CHECKING:
    from lossurf.data.base import Dataset

__all__ = ["ExperimentCheck", "check_experiment", "check_trainable", "check_last_batch"]


@dataclass(frozen=True)
class ExperimentCheck:
    """What a checked experiment will train."""

    name: str
    model: str
    parameters: int
    train_examples: int
    test_examples: int
    runs: int
    epochs: int
    device: str

    def summary(self) -> str:
        """One line for a person: what trains, on what, for how long."""
        return (
            f"{self.name}: ok; {self.runs} run{'s' if self.runs != 1 else ''} x {self.epochs} "
            f"epoch{'s' if self.epochs != 1 else ''} of {self.model} ({self.parameters:,} "
            f"parameters) on {self.train_examples:,} training and {self.test_examples:,} test "
            f"examples, device {self.device}"
        )


def check_experiment(config: ExperimentConfig) -> ExperimentCheck:
    """Validate ``config`` against this machine and its data; nothing is written.

    Raises:
        LossurfError: an unavailable device, missing or malformed data, an unknown model or
            model option, an unknown optimizer or optimizer option, a batch size that leaves a
            minibatch of one example for a batch norm that cannot train on one.
    """
    from lossurf import data as data_module
    from lossurf.devices import check_device
    from lossurf.engine import resolve_config
    from lossurf.threads import env_threads

    device = check_device(config.device)  # first: it is the cheapest and needs no files
    env_threads()  # a bad LOSSURF_THREADS would stop the training
    dataset = data_module.load(config.data)
    resolved = resolve_config(config, dataset)
    params = list(check_trainable(resolved, dataset).parameters())
    return ExperimentCheck(
        name=resolved.name,
        model=resolved.model.name,
        parameters=sum(p.numel() for p in params),
        train_examples=len(dataset.train_x),
        test_examples=len(dataset.test_x),
        runs=len(resolved.run_names()),
        epochs=resolved.epochs,
        device=str(device),
    )


def check_trainable(config: ExperimentConfig, dataset: "Dataset") -> torch.nn.Module:
    """Build the model of the (resolved) ``config`` and every optimizer of its runs (and the
    one each switches to), and refuse a last minibatch its batch norm cannot train on: all
    that would otherwise fail after the experiment directory was written. Returns the model.

    Raises:
        LossurfError: an unknown model or option, an unknown optimizer or option, or the
            batch size of :func:`check_last_batch`.
    """
    from lossurf import models
    from lossurf.train import build_optimizer

    model = models.build(config.model)
    params = list(model.parameters())
    for run in config.runs:
        for phase in (0, 1) if run.switch else (0,):
            build_optimizer(run, phase, params)
    check_last_batch(model, config.batch_size, dataset)
    return model


def check_last_batch(model: torch.nn.Module, batch_size: int, dataset: "Dataset") -> None:
    """Refuse, before anything is written, a batch size whose minibatches include one of a
    single example when the model's batch norm cannot train on one (BatchNorm1d after a linear
    layer: one value per channel). We refuse rather than drop the example so that every epoch
    of every optimizer sees the whole training set, as the config says."""
    n = len(dataset.train_x)
    if not (batch_size == 1 or n % batch_size == 1):
        return
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    model.train()
    try:
        with torch.no_grad():
            model(dataset.train_x[:1])
    except ValueError:  # "Expected more than 1 value per channel when training"
        pass
    else:
        return  # e.g. BatchNorm2d: an image still has many values per channel
    fits = [b for b in sorted(range(2, n + 1), key=lambda b: (abs(b - batch_size), -b)) if n % b != 1]
    hint = f"e.g. {fits[0]}" if fits else "a larger data set"
    raise LossurfError(
        f"batch_size {batch_size} leaves a minibatch of one example in every epoch ({n} training "
        f"examples), and the model's batch norm cannot train on one example; pick a batch_size "
        f"that does not ({hint})"
    )
