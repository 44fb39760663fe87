"""Validated, frozen configuration: data, model, initialization, runs, and the experiment.

An experiment is a YAML file (see ``examples/digits.yaml``). :func:`load_config` reads it and
turns every validation problem into one :class:`~lossurf.errors.LossurfError` that names the
offending field. The resolved config is written back into the run directory so that
``lossurf.load_experiment`` can rebuild everything from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lossurf.errors import LossurfError

__all__ = [
    "DataSpec",
    "InitSpec",
    "ModelSpec",
    "SwitchSpec",
    "RunSpec",
    "TrainingSettings",
    "ExperimentConfig",
    "load_config",
    "parse_config",
    "format_validation_error",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSpec(_Frozen):
    """Which data set to load and how.

    Attributes:
        name: a registered data set (``digits``, ``cifar10``, ``ptb``, ``synthetic-text``).
        data_dir: where files live for data sets that are not embedded (``cifar10``, ``ptb``).
        augment: random crop + horizontal flip during training (image data sets only).
        split_seed: seed of the fixed train/test split (data sets without a given split).
        max_train: keep only this many training examples (a fixed, seeded subset).
        max_test: keep only this many test examples (a fixed, seeded subset).
        bptt: sequence length for language-model data.
        options: data-set specific settings (e.g. ``vocab_size`` of ``synthetic-text``).
    """

    name: str = "digits"
    data_dir: Path | None = None
    augment: bool = False
    split_seed: int = 0
    max_train: int | None = Field(default=None, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    bptt: int = Field(default=35, ge=2)
    options: dict[str, Any] = Field(default_factory=dict)


class InitSpec(_Frozen):
    """Initialization scheme.

    ``default`` keeps the framework's own small initialization; ``normal`` draws every parameter
    from N(mean, std) as in the paper's appendix A.5 (N(-10, 0.01), N(-1, 1)).
    """

    scheme: Literal["default", "normal"] = "default"
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)


class ModelSpec(_Frozen):
    """A registered model and its options (``batch_norm``, ``dropout``, widths, ...).

    ``lossurf.models.build(spec)`` turns it into an ``nn.Module``. In a resolved config the
    options also carry what the data set decides (``num_classes``, ``in_channels``,
    ``vocab_size``), so a stored spec rebuilds the module on its own.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    init: InitSpec = Field(default_factory=InitSpec)


class SwitchSpec(_Frozen):
    """Switch to optimizer ``to`` (learning rate ``lr``) after fraction ``at`` of the epochs."""

    to: str
    lr: float = Field(gt=0)
    at: float = Field(gt=0, lt=1)
    options: dict[str, Any] = Field(default_factory=dict)


class RunSpec(_Frozen):
    """One training run: an optimizer, its learning rate and options, optionally a switch."""

    optimizer: str
    lr: float = Field(gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    switch: SwitchSpec | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _typeable(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "/@:, \t")):
            raise ValueError(f"run name {value!r} must be non-empty and contain none of '/@:, '")
        return value

    def base_name(self) -> str:
        """The run's name without the seed: ``name`` if given, else derived from the optimizers."""
        if self.name:
            return self.name
        if self.switch is None:
            return self.optimizer
        return f"{self.optimizer}-to-{self.switch.to}-{round(self.switch.at * 100)}"


class TrainingSettings(_Frozen):
    """How every run of an experiment trains; shared by experiment configs and presets.

    ``threads`` sets torch's CPU threads; ``None`` picks one thread for small models (below a
    million parameters: intra-op parallelism costs them more than it saves, 60x slower steps
    measured on a loaded 2-core machine) and torch's default otherwise.
    """

    epochs: int = Field(ge=1)
    batch_size: int = Field(default=128, ge=1)
    eval_subset: int | None = Field(default=1024, ge=1)
    checkpoint_every: int = Field(default=1, ge=1)
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1)

    def training_settings(self) -> dict[str, Any]:
        """These settings alone, as keyword arguments for another config."""
        return {name: getattr(self, name) for name in TrainingSettings.model_fields}


class ExperimentConfig(TrainingSettings):
    """A whole experiment: one model and data set, several seeds, several runs per seed.

    For each seed there is one initialization and one minibatch order, shared by every run.
    """

    name: str = "experiment"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    runs: list[RunSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "ExperimentConfig":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a value; give each seed once")
        names = [r.base_name() for r in self.runs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"runs {dupes} appear more than once; give each a distinct 'name:' field"
            )
        return self

    def run_names(self) -> list[str]:
        """Names of every (run, seed) pair, in training order: ``adam`` or ``adam@seed1``."""
        return [name for name, _, _ in self.iter_runs()]

    def iter_runs(self) -> list[tuple[str, RunSpec, int]]:
        """``(name, run spec, seed)`` for every run of every seed, in training order."""
        single = len(self.seeds) == 1
        return [
            (run.base_name() if single else f"{run.base_name()}@seed{seed}", run, seed)
            for seed in self.seeds
            for run in self.runs
        ]


def format_validation_error(error: ValidationError, what: str) -> str:
    """One message listing every invalid field of ``what`` by its dotted path."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return f"invalid {what}:\n" + "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping as an :class:`ExperimentConfig`; errors name the bad field."""
    if not isinstance(raw, dict):
        raise LossurfError(f"{source} must hold a mapping of fields (model:, epochs:, runs:, ...)")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise LossurfError(format_validation_error(error, f"experiment config in {source}")) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Raises:
        LossurfError: the file is missing, is not YAML, or a field is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise LossurfError(f"experiment file {path} does not exist; pass the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LossurfError(f"{path} is not valid YAML{where}: fix the syntax") from None
    return parse_config(raw, str(path))
