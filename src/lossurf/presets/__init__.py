"""Presets: everything the paper's recipes need, as one validated YAML file.

A preset names the data, the model, the training budget, the learning rate of every method and
the sizes of the surfaces, plus per-recipe lists (which method pairs to draw, which switches
to train). ``digits`` is the embedded default (minutes on a laptop CPU), ``cifar10`` and ``ptb``
are the paper's scale. Copy one (``src/lossurf/presets/*.yaml``), edit it and pass its path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lossurf.config import (
    DataSpec, InitSpec, ModelSpec, TrainingSettings, format_validation_error, read_yaml,
)
from lossurf.errors import LossurfError

__all__ = ["Preset", "MethodSpec", "SurfaceSettings", "SwitchVariant", "load_preset", "preset_names", "PAPER_LR_GRIDS"]

#: The paper's learning-rate grids (section 3.4); Runge-Kutta variants double them.
PAPER_LR_GRIDS: dict[str, list[float]] = {
    "sgd": [0.2, 0.1, 0.05, 0.01],
    "adaptive": [0.002, 0.001, 0.0005, 0.0001],
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MethodSpec(_Frozen):
    """A named training method: an optimizer (any ``lossurf.optim`` name) and its lr."""

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("a method", "{optimizer: sgd, lr: 0.1}")

    optimizer: str
    lr: float = Field(gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    lr_grid: list[float] | None = None  # for --lr-search; default: the paper's grid
    #: The paper's doubled rates (sec. 3.4, A.4): this method's lr is twice that method's, and
    #: under --lr-search it follows that method's choice instead of being searched itself.
    twice_of: str | None = None


class SurfaceSettings(_Frozen):
    """Sizes and data of every surface a recipe computes."""

    subset: int | None = Field(default=512, ge=1)
    bn_examples: int = Field(default=1024, ge=1)
    bn: Literal["recompute", "interpolate", "batch"] = "recompute"
    line_steps: int = Field(default=21, ge=3)
    extended_steps: int = Field(default=41, ge=3)
    extend_to: float = Field(default=2.0, gt=1)
    basin_steps: int = Field(default=41, ge=3)
    plane_steps: int = Field(default=21, ge=2)
    batch_size: int | None = Field(default=None, ge=1)


class OptimizersSettings(_Frozen):
    methods: list[str] = Field(min_length=2)
    pairs: list[tuple[str, str]] = Field(min_length=1)
    bilinear_methods: list[str] = Field(min_length=4, max_length=4)


class RestartsSettings(_Frozen):
    methods: list[str] = Field(min_length=2)
    pairs: list[tuple[str, str]] = Field(min_length=1)


class SwitchVariant(_Frozen):
    """One learning-rate panel of Figs. 7(d) and 12-15 (e.g. ``fig13b``).

    Each pair ``(a, b)`` trains ``a`` at its own learning rate, then switches to ``b`` at
    ``lrs[b]`` (``b``'s own learning rate where ``lrs`` leaves it out) after each fraction.
    A switch identical to one of the section's plain switches is trained once and shared.
    """

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = ""
    pairs: list[tuple[str, str]] = Field(min_length=1)
    fractions: list[float] | None = Field(default=None, min_length=1)  # None: the section's
    lrs: dict[str, float] = Field(default_factory=dict)  # learning rate after the switch


class SwitchingSettings(_Frozen):
    pairs: list[tuple[str, str]] = Field(min_length=1)
    fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], min_length=1)
    variants: list[SwitchVariant] = Field(default_factory=list)


class BatchnormSettings(_Frozen):
    methods: list[str] = Field(min_length=2)
    pairs: list[tuple[str, str]] = Field(min_length=1)


class InitSettings(_Frozen):
    method: str = "sgd"
    inits: list[InitSpec] = Field(min_length=1)
    epochs: int | None = Field(default=None, ge=1)


class RungeKuttaSettings(_Frozen):
    methods: list[str] = Field(min_length=2)


class LrSearchSettings(_Frozen):
    epochs: int = Field(default=3, ge=1)
    holdout: float = Field(default=0.2, gt=0, lt=1)
    max_train: int | None = Field(default=None, ge=2)


class Preset(TrainingSettings):
    """A whole reproduction setting (see ``digits.yaml`` for a commented example)."""

    name: str
    description: str = ""
    data: DataSpec
    model: ModelSpec
    seeds: list[int] = Field(min_length=2)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    surface: SurfaceSettings = Field(default_factory=SurfaceSettings)
    lr_search: LrSearchSettings = Field(default_factory=LrSearchSettings)
    optimizers: OptimizersSettings
    restarts: RestartsSettings
    switching: SwitchingSettings
    batchnorm: BatchnormSettings | None = None  # None: the model has no batch-norm option
    init: InitSettings
    runge_kutta: RungeKuttaSettings

    @model_validator(mode="after")
    def _known_methods(self) -> "Preset":
        known = set(self.methods)
        bad = [c for c in self.methods if any(ch in c for ch in "/@:, \t")]
        if bad:
            raise ValueError(f"method names {bad} must contain none of '/@:, '")
        used: list[tuple[str, str]] = []
        sections = [s for s in ("optimizers", "restarts", "batchnorm") if getattr(self, s)]
        for section in sections:
            settings = getattr(self, section)
            used += [(f"{section}.methods", m) for m in settings.methods]
            used += [(f"{section}.pairs", m) for pair in settings.pairs for m in pair]
        used += [("optimizers.bilinear_methods", m) for m in self.optimizers.bilinear_methods]
        used += [("switching.pairs", m) for pair in self.switching.pairs for m in pair]
        for v in self.switching.variants:
            used += [(f"switching.variants.{v.key}.pairs", m) for pair in v.pairs for m in pair]
            used += [(f"switching.variants.{v.key}.lrs", m) for m in v.lrs]
        used += [("runge_kutta.methods", m) for m in self.runge_kutta.methods]
        used.append(("init.method", self.init.method))
        used += [(f"methods.{m}.twice_of", spec.twice_of) for m, spec in self.methods.items()
                 if spec.twice_of is not None]
        for where, method in used:
            if method not in known:
                raise ValueError(
                    f"{where} names method {method!r}, which is not defined under methods: "
                    f"(defined: {sorted(known)}); add it there or remove it here"
                )
        for m, spec in self.methods.items():
            base = self.methods.get(spec.twice_of) if spec.twice_of else None
            if base is None:
                continue
            if base.twice_of is not None:
                raise ValueError(f"methods.{m}.twice_of names {spec.twice_of!r}, which is itself "
                                 "twice another method's; name the base method")
            if abs(spec.lr - 2 * base.lr) > 1e-12 * spec.lr:
                raise ValueError(f"methods.{m}: lr {spec.lr:g} is not twice {spec.twice_of}'s "
                                 f"{base.lr:g} (twice_of: {spec.twice_of}); set it to "
                                 f"{2 * base.lr:g}")
        for f in self.switching.fractions:
            if not 0 < f < 1:
                raise ValueError(f"switching.fractions: {f} is not strictly between 0 and 1")
        keys = [v.key for v in self.switching.variants]
        if len(set(keys)) != len(keys):
            raise ValueError(f"switching.variants: keys {keys} repeat; give each panel its own key")
        for v in self.switching.variants:
            for f in v.fractions or []:
                if not 0 < f < 1:
                    raise ValueError(f"switching.variants.{v.key}.fractions: {f} is not strictly "
                                     "between 0 and 1")
            for m, lr in v.lrs.items():
                if not lr > 0:
                    raise ValueError(f"switching.variants.{v.key}.lrs.{m}: {lr} must be > 0")
        for section in sections:
            settings = getattr(self, section)
            missing = sorted({m for p in settings.pairs for m in p} - set(settings.methods))
            if missing:
                raise ValueError(f"{section}.pairs use {missing}, not listed in {section}.methods")
        return self


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("lossurf.presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_preset(raw: Any, source: str = "<dict>") -> Preset:
    """Validate a mapping as a :class:`Preset`; errors name the bad field."""
    if not isinstance(raw, dict):
        raise LossurfError(f"preset {source} must hold a mapping of fields (name:, data:, model:, ...)")
    if "runs" in raw and "methods" not in raw:  # runs: is what only an experiment file has
        raise LossurfError(
            f"{source} is an experiment file, not a preset; train it with `lossurf train "
            f"{source} --out DIR`, or pass a preset ({', '.join(preset_names())}, or a preset YAML)"
        )
    try:
        return Preset.model_validate(raw)
    except ValidationError as error:
        raise LossurfError(format_validation_error(error, f"preset {source}", Preset)) from None


def load_preset(name_or_path: str | Path | Preset) -> Preset:
    """A built-in preset by name (``digits``, ``cifar10``, ``ptb``) or a YAML file by path.

    Raises:
        LossurfError: unknown name, missing file, invalid YAML or an invalid field.
    """
    if isinstance(name_or_path, Preset):
        return name_or_path
    text = str(name_or_path)
    if text in preset_names():
        source = resources.files("lossurf.presets").joinpath(f"{text}.yaml")
        content, where = source.read_bytes(), f"{text!r} (built in)"
    else:
        path = Path(text)
        if path.is_dir():
            raise LossurfError(
                f"preset {path} is a directory, not a file; pass a built-in preset "
                f"({', '.join(preset_names())}) or the path of a preset YAML file"
            )
        if not path.is_file():
            raise LossurfError(
                f"unknown preset {text!r}: not a built-in preset ({', '.join(preset_names())}) "
                "and no such file; pass one of those names or the path of a preset YAML file"
            )
        try:
            content, where = path.read_bytes(), str(path)
        except OSError as error:
            raise LossurfError(
                f"preset {path} cannot be read ({error.strerror or error}); make it readable"
            ) from None
    raw = read_yaml(content, f"preset {where}", "pass a preset YAML file")
    return parse_preset(raw, where)
