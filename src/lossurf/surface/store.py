"""Surface results as xarray Datasets, persisted chunk by chunk to a zarr store that resumes.

:func:`compute_surface` evaluates a :class:`~lossurf.surface.paths.Grid` in chunks of grid
points. With a ``store`` path every finished chunk is written at once: first its values, then
its entries of the boolean ``computed`` mask, each as whole zarr chunks (zarr writes a chunk
file atomically). A killed computation therefore loses at most the chunks in flight, and the
same call again computes only the points whose mask is still False. A store made for another
request (other anchors, grid, reference, BN policy or data) is refused, never mixed.

Zarr chunks span whole rows of the grid: a chunk covers ``r`` consecutive values of the first
dim and everything along the others, so one computed chunk is one contiguous run of flat
(row-major) point indices and one zarr chunk per variable.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import zarr

from lossurf.backends import Backend, LocalBackend
from lossurf.errors import LossurfError
from lossurf.params import StateDict, as_state, check_compatible, state_hash
from lossurf.surface.paths import Grid

__all__ = ["compute_surface", "ChunkTask", "chunk_layout", "VARIABLE_ORDER"]

#: Data variables in the order a Dataset lists them; others follow alphabetically.
VARIABLE_ORDER = ("loss", "accuracy", "perplexity", "fdist", "disagreement")
#: attrs that must match for a store to be resumed rather than refused.
_IDENTITY = ("lossurf_kind", "grid_fingerprint", "anchor_hashes", "reference_hash", "bn", "data")


@dataclass(frozen=True)
class ChunkTask:
    """Evaluate one chunk of grid points: a picklable callable for ``Backend.map``.

    Work items are ``(chunk_index, point_indices)``; the result is ``(chunk_index,
    point_indices, {variable: float64 array})``.
    """

    evaluator: Any
    anchors: tuple[StateDict, ...]
    coefficients: np.ndarray
    reference: StateDict | None = None

    def __call__(
        self, item: tuple[int, np.ndarray]
    ) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
        chunk_index, points = item
        out = self.evaluator.evaluate(
            self.anchors, self.coefficients[points], reference=self.reference
        )
        values = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in out.items()}
        for name, array in values.items():
            if array.size != len(points):
                raise ValueError(
                    f"evaluator returned {array.size} values of {name!r} for {len(points)} points"
                )
        return chunk_index, points, values


def chunk_layout(
    shape: tuple[int, ...], chunk_points: int
) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Zarr chunk shape and the flat point indices of each chunk, for a grid of ``shape``.

    Args:
        shape: the grid shape.
        chunk_points: the wanted number of points per chunk; rounded down to whole rows
            (at least one row).

    Returns:
        ``(chunk_shape, [point_indices per chunk])``.
    """
    inner = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rows = max(1, int(chunk_points) // inner)
    total = int(np.prod(shape))
    step = rows * inner
    chunks = [np.arange(s, min(s + step, total)) for s in range(0, total, step)]
    return (rows, *shape[1:]), chunks


def _lossurf_version() -> str:
    try:
        from lossurf import __version__

        return str(__version__)
    except ImportError:
        return importlib.metadata.version("lossurf")


def _jsonable(value: Any) -> Any:
    """Make attrs JSON-friendly (zarr stores attrs as JSON): paths and odd types become str."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        if isinstance(value, Mapping):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return str(value)


def _surface_attrs(evaluator: Any, anchors, grid: Grid, reference, attrs: dict | None) -> dict:
    out = {f"geometry_{k}" if k != "geometry" else k: v for k, v in grid.attrs.items()}
    out.update(_jsonable(dict(attrs or {})))
    out.update(
        lossurf_kind=grid.kind,
        grid_fingerprint=grid.fingerprint(),
        anchor_roles=list(grid.anchors),
        anchor_hashes=[state_hash(a) for a in anchors],
        reference_hash=state_hash(reference) if reference is not None else "",
        bn=str(out.get("bn", getattr(evaluator, "bn", "unknown"))),
        data=out.get("data", ""),
        lossurf_version=_lossurf_version(),
        torch_version=torch.__version__,
    )
    return _jsonable(out)


def _order(names) -> list[str]:
    known = [n for n in VARIABLE_ORDER if n in names]
    return known + sorted(n for n in names if n not in VARIABLE_ORDER)


def _dataset(grid: Grid, values: Mapping[str, np.ndarray], attrs: dict) -> xr.Dataset:
    data_vars = {
        name: (grid.dims, np.asarray(values[name], np.float64).reshape(grid.shape))
        for name in _order(values)
    }
    coords = {d: grid.coords[d] for d in grid.dims}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _open_existing(path: Path, attrs: dict) -> zarr.Group:
    try:
        group = zarr.open_group(str(path), mode="r+")
        stored = dict(group.attrs)
        group["computed"]
    except Exception as err:  # any unreadable store is a user-fixable situation here
        raise LossurfError(
            f"{path} exists but is not a lossurf surface store ({type(err).__name__}); "
            "pass a new --out or delete it"
        ) from None
    for key in _IDENTITY:
        if stored.get(key) != attrs.get(key):
            raise LossurfError(
                f"surface store {path} was computed for a different request ({key} differs: "
                f"{stored.get(key)!r} there, {attrs.get(key)!r} now); pass a new --out or "
                "delete it"
            )
    return group


def _create(path: Path, grid: Grid, names, attrs: dict, chunk_shape) -> zarr.Group:
    nan = {n: np.full(grid.num_points, np.nan) for n in names}
    template = _dataset(grid, nan, attrs)
    template["computed"] = (grid.dims, np.zeros(grid.shape, dtype=bool))
    encoding = {n: {"chunks": chunk_shape} for n in template.data_vars}
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is not yet in its v3 spec; xarray reads it
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        template.to_zarr(str(path), mode="w-", encoding=encoding, consolidated=True)
    return zarr.open_group(str(path), mode="r+")


def _region(points: np.ndarray, grid: Grid) -> tuple[slice, ...]:
    inner = grid.num_points // grid.shape[0]
    start, stop = int(points[0]) // inner, (int(points[-1]) + 1) // inner
    return (slice(start, stop),)


def compute_surface(
    evaluator: Any,
    anchors: Sequence[StateDict],
    grid: Grid,
    *,
    store: str | Path | None = None,
    reference: StateDict | None = None,
    attrs: dict | None = None,
    chunk_points: int = 32,
    backend: Backend | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Evaluate every point of ``grid`` and return the results as an xarray Dataset.

    Args:
        evaluator: has ``evaluate(anchors, coefficients[P, A], reference=None)`` returning a
            dict of float arrays of length P (``loss``, ``accuracy``, ...) and, for the
            provenance attrs, a ``bn`` attribute naming its batch-norm policy.
        anchors: the grid's anchor state dicts, in ``grid.anchors`` order.
        grid: the points, as affine combinations of the anchors.
        store: a zarr store path, written chunk by chunk; an existing store for the same
            request is resumed (only missing points are computed), one for another request is
            refused. None keeps everything in memory.
        reference: with a reference, the evaluator also returns ``fdist`` and
            ``disagreement`` from it.
        attrs: provenance added to the Dataset's attrs, e.g. ``anchor_labels`` (``["init",
            "adam:epoch=10"]``), ``anchor_checkpoints``, ``anchor_file_hashes``, ``data`` (a
            description of the evaluated examples), ``bn``; ``data`` and ``bn`` take part in
            the resume check. Anchor content hashes (``anchor_hashes``, sha256 of each state
            dict) and the grid's fingerprint are always added.
        chunk_points: grid points per chunk (rounded to whole rows of the first dim).
        backend: runs the chunks (default :class:`~lossurf.backends.LocalBackend`).
        progress: show a rich progress bar.

    Returns:
        A Dataset over the grid's coordinates with ``loss``, ``accuracy`` and whatever else
        the evaluator returns, and attrs naming the anchors (roles, hashes), the geometry,
        the BN policy, the data, and the lossurf and torch versions.
    """
    integer = isinstance(chunk_points, (int, np.integer)) and not isinstance(chunk_points, bool)
    if not integer or chunk_points < 1:
        raise LossurfError(f"chunk_points must be a positive integer, got {chunk_points!r}")
    if len(anchors) != len(grid.anchors):
        raise LossurfError(
            f"the {grid.kind} grid needs {len(grid.anchors)} weight vectors "
            f"({', '.join(grid.anchors)}), got {len(anchors)}"
        )
    anchors = tuple(as_state(a) for a in anchors)
    reference = as_state(reference) if reference is not None else None
    states = list(anchors) + ([reference] if reference is not None else [])
    check_compatible(states, list(grid.anchors) + (["reference"] if reference is not None else []))

    full_attrs = _surface_attrs(evaluator, anchors, grid, reference, attrs)
    chunk_shape, chunks = chunk_layout(grid.shape, chunk_points)
    path = Path(store) if store is not None else None
    group = _open_existing(path, full_attrs) if path is not None and path.exists() else None
    todo = list(range(len(chunks)))
    if group is not None:
        done = np.asarray(group["computed"][...]).reshape(-1)
        todo = [i for i in todo if not done[chunks[i]].all()]

    task = ChunkTask(evaluator, anchors, grid.flat_coefficients(), reference)
    memory: dict[str, np.ndarray] = {}
    backend = backend if backend is not None else LocalBackend()
    items = [(i, chunks[i]) for i in todo]
    with _ProgressBar(progress, sum(len(chunks[i]) for i in todo), grid.kind) as advance:
        for _, points, values in backend.map(task, items):
            if path is not None:
                if group is None:
                    group = _create(path, grid, values, full_attrs, chunk_shape)
                region = _region(points, grid)
                # values first, then the mask: a kill in between only recomputes this chunk
                for name, array in values.items():
                    group[name][region] = array.reshape((-1, *grid.shape[1:]))
                group["computed"][region] = True
            else:
                for name, array in values.items():
                    memory.setdefault(name, np.full(grid.num_points, np.nan))[points] = array
            advance(len(points))

    if path is None:
        return _dataset(grid, memory, full_attrs)
    if group is None:  # an empty grid cannot happen (>= 2 values per dim); keep mypy calm
        raise LossurfError(f"nothing was computed for {path}")
    result = xr.open_zarr(str(path)).load()
    return result.drop_vars("computed")


class _ProgressBar:
    """A rich progress bar over grid points (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label
        self._bar = None

    def __enter__(self):
        if not self.enabled or self.total == 0:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            "points", TimeRemainingColumn(), console=Console(stderr=True),
        )
        self._bar.__enter__()
        task = self._bar.add_task(f"{self.label} surface", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
