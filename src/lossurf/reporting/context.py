"""What a report says about the run behind it: the scale, the surface settings, the command.

- :func:`scale_of` reads every recipe's experiments (``experiment.yaml``) into a
  :class:`Scale`: preset, data set and its train/test sizes, model and parameter count,
  epochs, evaluation subset, and the grid sizes of the surface stores the figures show;
  ``proxy`` says whether that is smaller than the paper's (CIFAR-10, NIN/VGG, 200 epochs).
- :func:`store_settings` reads a surface store's attrs: evaluated examples, grid, BN policy.
- :func:`read_invocations` reads ``OUT/invocations.json``, where ``lossurf demo`` records each
  command it ran and its wall time, so a resumed run reports the time of every process.

Everything here only reads files; a file that cannot be read leaves its field empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["Scale", "StoreSettings", "scale_of", "store_settings", "figure_stores",
           "read_invocations", "training_seconds", "PAPER_SCALE"]

#: What the paper ran (section 3): the reference a preset is compared with.
PAPER_SCALE = "CIFAR-10 NIN/VGG, 200 epochs"
_PAPER_MODELS = ("nin", "vgg")
_PAPER_EPOCHS = 200
_SUBSET = re.compile(r"\bn=(\d+)")


@dataclass(frozen=True)
class StoreSettings:
    """The evaluation settings of one surface store (None where its attrs do not say)."""

    grid: str
    examples: int | None
    bn: str | None

    def text(self) -> str:
        """``grid 9 × 9 (alpha × beta), 256 examples per point, BN: recompute``."""
        parts = [f"grid {self.grid}"]
        if self.examples is not None:
            parts.append(f"{self.examples} examples per point")
        if self.bn:
            parts.append(f"BN statistics: {self.bn}")
        return ", ".join(parts)


@lru_cache(maxsize=512)
def _settings(path: str, stamp: tuple) -> StoreSettings | None:
    import xarray as xr

    try:
        ds = xr.open_zarr(path)
    except Exception:  # a broken store: the figure itself says what is wrong
        return None
    dims = [d for d in ds.sizes if d in ds.coords]
    grid = " × ".join(str(ds.sizes[d]) for d in dims) + f" ({' × '.join(dims)})"
    found = _SUBSET.search(str(ds.attrs.get("data", "")))
    bn = ds.attrs.get("bn")
    return StoreSettings(grid, int(found.group(1)) if found else None, str(bn) if bn else None)


def store_settings(path: Path) -> StoreSettings | None:
    """The settings of the store at ``path``, or None if it cannot be opened."""
    path = Path(path)
    if not path.exists():
        return None
    meta = path / "zarr.json"
    stat = (meta if meta.exists() else path).stat()
    return _settings(str(path), (stat.st_mtime_ns, stat.st_size))


def figure_stores(spec: "FigureSpec", result: "RecipeResult") -> list[Path]:
    """The surface stores (``*.zarr``) a figure spec names, in order, each once."""
    found: dict[Path, None] = {}

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from walk(item)

    for text in walk(spec.data):
        if text.endswith(".zarr"):
            found.setdefault(result.path(text), None)
    return list(found)


@dataclass
class Scale:
    """What the run was, across recipes (each field lists the distinct values found)."""

    presets: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    eval_subsets: list[int] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)
    proxy: bool = True


def _add(items: list, value: Any) -> None:
    if value is not None and value not in items:
        items.append(value)


def _config(root: Path) -> dict | None:
    try:
        raw = yaml.safe_load((root / "experiment.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return raw if isinstance(raw, dict) else None


@lru_cache(maxsize=32)
def _data_sizes(data_json: str) -> tuple[int, int] | None:
    """Train and test sizes of a data set (loaded once; None if it cannot be loaded)."""
    from lossurf import data as data_module
    from lossurf.config import DataSpec

    try:
        dataset = data_module.load(DataSpec(**json.loads(data_json)))
        return len(dataset.train_y), len(dataset.test_y)
    except Exception:  # the data may live elsewhere than where the report is written
        return None


@lru_cache(maxsize=32)
def _parameter_count(model_json: str) -> int | None:
    from lossurf import models

    try:
        module = models.build(json.loads(model_json), seed=0)
    except Exception:  # a user factory that is not importable here
        return None
    return sum(p.numel() for p in module.parameters())


def _model_text(model: dict) -> str:
    options = model.get("options") or {}
    name = str(model.get("name", "?"))
    if "batch_norm" in options:
        name += " with BN" if options["batch_norm"] else " without BN"
    init = model.get("init") or {}
    if init.get("scheme", "default") != "default":
        name += f", init N({init.get('mean'):g}, {init.get('std'):g})"
    count = _parameter_count(json.dumps(model, sort_keys=True))
    return name + (f" ({count:,} parameters)" if count is not None else "")


def scale_of(results: list["RecipeResult"]) -> Scale:
    """The scale of the run behind ``results`` (see :class:`Scale`)."""
    scale = Scale()
    paper = True
    for result in results:
        _add(scale.presets, result.preset)
        for relative in result.experiments.values():
            config = _config(result.path(relative))
            if config is None:
                continue
            data, model = config.get("data") or {}, config.get("model") or {}
            name = str(data.get("name", ""))
            if name:  # a config without its data or model section says nothing about them
                sizes = _data_sizes(json.dumps(data, sort_keys=True))
                _add(scale.data, name + (f" ({sizes[0]:,} train / {sizes[1]:,} test)" if sizes
                                         else ""))
            if model.get("name"):
                _add(scale.models, _model_text(model))
            _add(scale.epochs, config.get("epochs"))
            _add(scale.eval_subsets, config.get("eval_subset"))
            paper &= (name == "cifar10" and str(model.get("name", "")).startswith(_PAPER_MODELS)
                      and int(config.get("epochs") or 0) >= _PAPER_EPOCHS)
        for spec in result.figures:
            for store in figure_stores(spec, result):
                settings = store_settings(store)
                if settings is not None:
                    _add(scale.grids, settings.grid)
    scale.proxy = not (paper and scale.data)
    return scale


def read_invocations(out: Path) -> list[dict]:
    """The commands recorded in ``OUT/invocations.json`` (oldest first; [] if none)."""
    try:
        rows = json.loads((Path(out) / "invocations.json").read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def training_seconds(metrics: Path) -> float | None:
    """A run's training wall time: the last ``wall_time`` of its metrics, which the engine
    carries over a resume (so it is every process's time, not the last one's)."""
    import pandas as pd

    if not metrics.is_file():
        return None
    try:
        frame = pd.read_csv(metrics)
    except (OSError, ValueError):
        return None
    if "wall_time" not in frame or frame.empty:
        return None
    return float(frame["wall_time"].iloc[-1])
