"""Validated, frozen configuration: data, model, initialization, runs, and the experiment.

An experiment is a YAML file (see ``examples/digits.yaml``). :func:`load_config` reads it and
turns every validation problem into one :class:`~lossurf.errors.LossurfError` that names the
offending field. The resolved config is written back into the run directory so that
``lossurf.load_experiment`` can rebuild everything from it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Callable, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lossurf.devices import device_name
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
    "read_yaml",
    "MAX_EPOCHS",
    "MAX_LR",
    "MAX_SEED",
    "MAX_BATCH_SIZE",
    "MAX_EXAMPLES",
    "MAX_NAME_LENGTH",
    "MAX_RUNS",
    "LearningRate",
    "Seed",
]

# Upper bounds on what a config may ask, so that a typo (an extra zero, a pasted exponent)
# fails at once with the field named instead of hanging for days or overflowing deep inside torch.
#: Epochs per run: the paper trains 200; 100k epochs of even the digits model take days.
MAX_EPOCHS = 100_000
#: Learning rates: the paper's grids stop at 4 (RK2 over SGD on PTB); above 1e3 every registered
#: optimizer's first step overflows float32 weights.
MAX_LR = 1e3
#: Seeds must fit a signed 64-bit integer (torch, numpy and JSON readers all accept that range).
MAX_SEED = 2**63 - 1
#: Minibatch size: a million examples per step is past any accelerator's memory for these models.
MAX_BATCH_SIZE = 1_000_000
#: Example counts (eval subsets, max_train/max_test): torch indexes with int32 on some backends.
MAX_EXAMPLES = 2**31 - 1
#: Run and experiment names: they become directory names and figure labels.
MAX_NAME_LENGTH = 100
#: Seeds and runs per experiment: each pair is a full training run.
MAX_RUNS = 1000

#: A finite learning rate in (0, MAX_LR].
LearningRate = Annotated[float, Field(gt=0, le=MAX_LR)]
#: A seed in [0, MAX_SEED].
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str, what: str) -> str:
    """``value`` if it has no control characters (NUL, newline, ...) and is not too long."""
    if _CONTROL.search(value):
        raise ValueError(f"{what} {value!r} contains a control character; use printable text")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; use at most {MAX_NAME_LENGTH}")
    return value


def _checked(check: Callable[[Any], str], value: Any) -> str:
    """``check(value)``; its one-line :class:`LossurfError` becomes the ``ValueError`` that
    pydantic reports under the field's name."""
    try:
        return check(value)
    except LossurfError as error:
        raise ValueError(str(error)) from None


class _Frozen(BaseModel):
    # allow_inf_nan=False: every float field of a config must be finite (`.inf`, `.nan` in YAML)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class AugmentSpec(_Frozen):
    """Training-time augmentation of image data: random horizontal flips (cifar.torch's
    training script does only these) and, as an option, random 4-pixel-padded crops."""

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("augment", "{flip: true, crop: false}")

    flip: bool = True
    crop: bool = False

    def __bool__(self) -> bool:
        return self.flip or self.crop


class DataSpec(_Frozen):
    """Which data set to load and how.

    Attributes:
        name: a registered data set (``digits``, ``cifar10``, ``ptb``, ``synthetic-text``).
        data_dir: where files live for data sets that are not embedded (``cifar10``, ``ptb``).
        augment: training-time augmentation (image data sets only): ``{flip, crop}`` (see
            :class:`AugmentSpec`); ``true`` keeps its old meaning, crop and flip both.
        split_seed: seed of the fixed train/test split (data sets without a given split).
        max_train: keep only this many training examples (a fixed, seeded subset).
        max_test: keep only this many test examples (a fixed, seeded subset).
        bptt: sequence length for language-model data.
        options: data-set specific settings (e.g. ``vocab_size`` of ``synthetic-text``).
    """

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("data", "{name: digits}")

    name: str = "digits"
    data_dir: Path | None = None
    augment: bool | AugmentSpec = False
    split_seed: Seed = 0
    max_train: int | None = Field(default=None, ge=1, le=MAX_EXAMPLES)
    max_test: int | None = Field(default=None, ge=1, le=MAX_EXAMPLES)
    bptt: int = Field(default=35, ge=2, le=100_000)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        # A NUL byte makes every later filesystem call raise ValueError("embedded null byte").
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("contains a NUL character; give the path of a directory")
        return value


class InitSpec(_Frozen):
    """Initialization scheme.

    ``default`` keeps the framework's own small initialization; ``normal`` draws every parameter
    from N(mean, std) as in the paper's appendix A.5 (N(-10, 0.01), N(-1, 1)).
    """

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("an init", "{scheme: normal, mean: 0.0, std: 1.0}")

    scheme: Literal["default", "normal"] = "default"
    mean: float = Field(default=0.0, ge=-1e6, le=1e6)
    std: float = Field(default=1.0, gt=0, le=1e6)


class ModelSpec(_Frozen):
    """A registered model and its options (``batch_norm``, ``dropout``, widths, ...).

    ``lossurf.models.build(spec)`` turns it into an ``nn.Module``. In a resolved config the
    options also carry what the data set decides (``num_classes``, ``in_channels``,
    ``vocab_size``), so a stored spec rebuilds the module on its own.
    """

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("a model", "{name: mlp, options: {}}")

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    init: InitSpec = Field(default_factory=InitSpec)


class SwitchSpec(_Frozen):
    """Switch to optimizer ``to`` (learning rate ``lr``) after fraction ``at`` of the epochs."""

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("a switch", "{to: sgd, lr: 0.1, at: 0.5}")

    to: str
    lr: LearningRate
    at: float = Field(gt=0, lt=1)
    options: dict[str, Any] = Field(default_factory=dict)


class RunSpec(_Frozen):
    """One training run: an optimizer, its learning rate and options, optionally a switch."""

    #: What one looks like, for the message when something else is given.
    yaml_example: ClassVar[tuple[str, str]] = ("a run", "{optimizer: sgd, lr: 0.1}")

    optimizer: str
    lr: LearningRate
    options: dict[str, Any] = Field(default_factory=dict)
    switch: SwitchSpec | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _typeable(cls, value: str | None) -> str | None:
        # A run name is a directory under runs/ and is typed in end points (`adam@seed1:epoch=3`).
        if value is None:
            return value
        _printable(value, "run name")
        if not value or any(c in value for c in "/\\@:, ") or value in (".", ".."):
            raise ValueError(
                f"run name {value!r} must be non-empty, not '.' or '..', and contain none of '/\\@:, '"
            )
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

    ``threads`` sets torch's CPU threads; ``None`` follows the usable cores less the share other
    processes keep busy (or ``LOSSURF_THREADS``; see :mod:`lossurf.threads`). A run keeps the
    count it started with when it is resumed, so its result does not depend on the load.

    ``precision`` (see :mod:`lossurf.precision`) holds for the training steps and each epoch's
    evaluation: ``fp32`` (strict, TF32 off), ``tf32`` (the default) or ``bf16`` (autocast of
    the forward passes; the loss is taken in float32). ``tf32`` is the default because on a GPU
    it is what plain PyTorch does for convolutions (cuDNN's TF32 is on by default) and runs
    several times the strict float32 rate on Hopper, while on the CPU it is exactly ``fp32``,
    so CPU results do not change. It is recorded in ``run.json`` and in ``metrics.csv``.
    """

    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=128, ge=1, le=MAX_BATCH_SIZE)
    eval_subset: int | None = Field(default=1024, ge=1, le=MAX_EXAMPLES)
    checkpoint_every: int = Field(default=1, ge=1, le=MAX_EPOCHS)
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1, le=1024)
    precision: str = "tf32"

    @field_validator("device", mode="before")
    @classmethod
    def _known_device(cls, value: Any) -> str:
        # Spelling only: whether this machine has the device is checked where it is used
        # (lossurf.devices.check_device), since a config may be written for another machine.
        return _checked(device_name, value)

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, value: Any) -> str:
        from lossurf.precision import check_precision

        return _checked(check_precision, value)

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
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_RUNS)
    runs: list[RunSpec] = Field(min_length=1, max_length=MAX_RUNS)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        return _printable(value, "experiment name")

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


def _members(annotation: Any) -> list[Any]:
    """The types an annotation allows: ``Annotated`` peeled, a union split, ``None`` left out."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        return [m for a in get_args(annotation) if a is not type(None) for m in _members(a)]
    return [annotation]


def _model(members: list[Any]) -> type[BaseModel] | None:
    return next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)


def _locate(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """The dotted path of pydantic's ``loc`` as the file spells it, and the types allowed there.

    Pydantic puts the member it tried into the location of a union (``augment.AugmentSpec.x``
    for ``augment: bool | AugmentSpec``); that is no key of the file, so it is left out.
    """
    shown: list[str] = []
    members: list[Any] = [model] if model is not None else []
    for part in loc:
        if isinstance(part, str) and len(members) > 1:
            tagged = [m for m in members if part in (getattr(m, "__name__", None), str(m))]
            if tagged:
                members = tagged
                continue
        shown.append(str(part))
        inner: list[Any] = []
        for member in members:
            origin, args = get_origin(member), get_args(member)
            if _model([member]) and isinstance(part, str) and part in member.model_fields:
                inner = _members(member.model_fields[part].annotation)
            elif origin is list and args and isinstance(part, int):
                inner = _members(args[0])
            elif origin is tuple and args and isinstance(part, int):
                inner = _members(args[0] if args[-1] is ... else args[min(part, len(args) - 1)])
            elif origin is dict and len(args) == 2:
                inner = _members(args[1])
            if inner:
                break
        members = inner
    return ".".join(shown), members


def _problem(item: Any, model: type[BaseModel] | None) -> str:
    """``path: what is wrong`` for one pydantic error, with what would be right where the
    bare pydantic message leaves it out (the valid fields, what a mapping looks like)."""
    where, members = _locate(model, tuple(item["loc"]))
    message = " ".join(str(item["msg"]).removeprefix("Value error, ").split())
    if item["type"] == "extra_forbidden":
        holder = _model(_locate(model, tuple(item["loc"])[:-1])[1])
        if holder is not None:
            fields = sorted(holder.model_fields)
            close = difflib.get_close_matches(str(item["loc"][-1]), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            message += f"{hint}; valid fields here: {', '.join(fields)}"
    elif item["type"] == "model_type":
        expected = _model(members)
        got = repr(item.get("input"))
        got = got if len(got) <= 40 else got[:37] + "..."
        if expected is not None:
            example = getattr(expected, "yaml_example", None)
            if example:
                message = f"got {got}, not a mapping; {example[0]} looks like {example[1]}"
            else:
                message = (f"got {got}, not a mapping; give a mapping of the fields "
                           f"{', '.join(expected.model_fields)}")
    return f"{where or '(top level)'}: {message}"


def format_validation_error(
    error: ValidationError, what: str, model: type[BaseModel] | None = None
) -> str:
    """One line naming every invalid field of ``what`` by its dotted path, and what it needs.

    ``model``, the class that was validated, lets the message list the valid fields where an
    unknown one is given and show what a mapping looks like where something else is given.
    """
    problems = [_problem(item, model) for item in error.errors(include_url=False)]
    return f"invalid {what}: " + "; ".join(problems)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping as an :class:`ExperimentConfig`; errors name the bad field."""
    if not isinstance(raw, dict):
        raise LossurfError(f"{source} must hold a mapping of fields (model:, epochs:, runs:, ...)")
    if "methods" in raw and "runs" not in raw:  # methods: is what only a preset has
        raise LossurfError(
            f"{source} is a preset, not an experiment file; run its recipes with `lossurf run "
            f"RECIPE --preset {source} --out DIR`, or pass an experiment YAML file (runs:, "
            f"model:, epochs:)"
        )
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        message = format_validation_error(error, f"experiment config in {source}", ExperimentConfig)
        raise LossurfError(message) from None


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose values Python cannot build (an integer of more than 4300
    digits, the date 2020-13-45) are YAML errors at their line, not a bare ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except LossurfError:
            raise
        except (ValueError, OverflowError) as error:
            raise yaml.constructor.ConstructorError(
                None, None, str(error).split(";")[0], node.start_mark
            ) from None


def read_yaml(content: bytes | str, what: str, fix: str) -> Any:
    """The YAML document in ``content`` (a file's bytes or text).

    ``what`` names the file in messages (``experiment file x.yaml``); ``fix`` says what to pass
    instead of a file that is not YAML text (``pass an experiment YAML file``).

    Raises:
        LossurfError: the bytes are not UTF-8, the text is not valid YAML, or a mapping has a
            key twice.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as error:  # a binary file, or text in another encoding
            byte = content[error.start]
            raise LossurfError(
                f"{what} is not UTF-8 text YAML (byte 0x{byte:02x} at offset {error.start}); {fix}"
            ) from None
    loader = None
    try:
        loader = _Loader(content)
        node = loader.get_single_node()  # what safe_load does, with the repeat check between
        if node is None:
            return None
        _refuse_repeated_keys(loader, node, what)
        return loader.construct_document(node)
    except yaml.reader.ReaderError as error:  # NUL and other characters YAML forbids
        char = error.character if isinstance(error.character, int) else ord(error.character)
        raise LossurfError(
            f"{what} is not YAML text (character #x{char:04x} at offset "
            f"{error.position} is not allowed in YAML); {fix}"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or "").split())
        why = f" ({problem})" if problem else ""
        wrong = "the value" if isinstance(error, yaml.constructor.ConstructorError) else "the syntax"
        raise LossurfError(f"{what} is not valid YAML{where}{why}: fix {wrong}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _refuse_repeated_keys(loader: yaml.SafeLoader, root: yaml.Node, what: str) -> None:
    """Raise if a mapping under ``root`` has a key twice: YAML loaders keep the last value
    silently, so `epochs: 2` ... `epochs: 5` would train 5 epochs without a word."""
    seen: set[int] = set()  # aliases share nodes (and may loop): visit each once
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}{i}.") for i, item in enumerate(node.value))
        if not isinstance(node, yaml.MappingNode):
            continue
        lines: dict[Any, list[int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overrides: allowed
                stack.append((value_node, where))
                continue
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: construction refuses it
                stack.append((value_node, where))
                continue
            # The constructed key, so that `epochs` and `"epochs"` are the same key
            key = loader.construct_object(key_node, deep=True)
            lines.setdefault(key, []).append(key_node.start_mark.line + 1)
            stack.append((value_node, f"{where}{key}."))
        for key, at in lines.items():
            if len(at) > 1:
                times = "twice" if len(at) == 2 else f"{len(at)} times"
                listed = ", ".join(map(str, at[:-1])) + f" and {at[-1]}"
                raise LossurfError(
                    f"{what}: key '{where}{key}' appears {times} (lines {listed}); keep one"
                )


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Raises:
        LossurfError: the file is missing, is not YAML, or a field is invalid.
    """
    path = Path(path)
    if path.is_dir():
        raise LossurfError(
            f"experiment file {path} is a directory, not a file; pass the path of a YAML file"
        )
    if not path.is_file():
        raise LossurfError(f"experiment file {path} does not exist; pass the path of a YAML file")
    try:
        content = path.read_bytes()
    except OSError as error:
        raise LossurfError(
            f"experiment file {path} cannot be read ({error.strerror or error}); make it readable"
        ) from None
    raw = read_yaml(content, f"experiment file {path}", "pass an experiment YAML file")
    return parse_config(raw, str(path))
