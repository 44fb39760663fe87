"""Check that an experiment can start, without training or writing anything.

``lossurf train EXP.yaml --check`` runs :func:`check_experiment`: the device exists here, the
data loads, the model builds with the data's shapes, and every optimizer (and the one each run
switches to) builds on the model's parameters — everything that would otherwise fail minutes
into a run or after the directory was written.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossurf.config import ExperimentConfig

__all__ = ["ExperimentCheck", "check_experiment"]


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
            model option, an unknown optimizer or optimizer option.
    """
    from lossurf import data as data_module, models
    from lossurf.devices import check_device
    from lossurf.engine import resolve_config
    from lossurf.train import build_optimizer

    device = check_device(config.device)  # first: it is the cheapest and needs no files
    dataset = data_module.load(config.data)
    resolved = resolve_config(config, dataset)
    model = models.build(resolved.model)
    params = list(model.parameters())
    for run in resolved.runs:
        for phase in (0, 1) if run.switch else (0,):
            build_optimizer(run, phase, params)
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
