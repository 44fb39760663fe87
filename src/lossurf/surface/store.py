"""Surface results as xarray Datasets, persisted chunk by chunk to a zarr store that resumes.

:func:`compute_surface` evaluates a :class:`~lossurf.surface.paths.Grid` in chunks of grid
points. With a ``store`` path every finished chunk is written at once: first its values, then
their sha256 checksum (:mod:`lossurf.surface.checksums`), then its entries of the boolean
``computed`` mask, each as whole zarr chunks (zarr writes a chunk file atomically). A killed
computation therefore loses at most the chunks in flight, and the same call again computes
only the chunks that do not verify: never finished, or finished and since deleted, truncated
or overwritten (it says how many points on stderr). Coordinate arrays have checksums too:
the reader refuses a store whose coordinate no longer verifies, naming it, and the same call
again rewrites it from the grid. A store made for another request (other
anchors, grid, reference, BN policy or data) is refused, never mixed.

Stores never exist half-made: the empty store is written under a hidden temporary sibling
name (``.<name>.creating-<pid>-<random>``) and renamed into place; a temporary left by a kill
is removed by the next run. One process writes a store at a time: compute_surface holds
:func:`lossurf.locks.exclusive_lock` on the folder ``.<name>.lock`` beside the store (see
:func:`lock_path`) from before it looks at the store until it has read the result back.
:func:`open_surface` is the one reader: it verifies every chunk, never warns, and turns an
unreadable store into one :class:`~lossurf.errors.LossurfError`.

Zarr chunks span whole rows of the grid: a chunk covers ``r`` consecutive values of the first
dim and everything along the others, so one computed chunk is one contiguous run of flat
(row-major) point indices and one zarr chunk per variable.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import sys
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
from lossurf.locks import exclusive_lock
from lossurf.params import StateDict, as_state, check_compatible, state_hash
from lossurf.surface.checksums import (Checksums, array_digests, chunk_digest, damaged_arrays,
                                       read_chunks)
from lossurf.surface.paths import Grid

__all__ = ["compute_surface", "open_surface", "lock_path", "ChunkTask", "chunk_layout",
           "VARIABLE_ORDER"]

#: Data variables in the order a Dataset lists them; others follow alphabetically.
VARIABLE_ORDER = ("loss", "accuracy", "perplexity", "fdist", "disagreement")
#: attrs that must match for a store to be resumed rather than refused.
_IDENTITY = ("lossurf_kind", "grid_fingerprint", "anchor_hashes", "reference_hash", "bn", "data",
             "loss", "precision")
#: What an identity key means when a store (written before the key existed) lacks it.
_IDENTITY_DEFAULTS = {"precision": "fp32"}


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


def _unreadable(path: Path, err: BaseException, what: str = "its metadata") -> LossurfError:
    """The one-line error for a store lossurf wrote but can no longer read."""
    return LossurfError(
        f"surface store {path} is damaged: {what} cannot be read ({type(err).__name__}); "
        "delete it and run the same command again to recompute it"
    )


def _not_a_file(path: Path, fix: str) -> None:
    """Refuse a regular file where a store (a directory) is expected: lossurf never wrote it,
    so it is not damaged and must not be deleted on our say-so."""
    if path.exists() and not path.is_dir():
        raise LossurfError(f"{path} is a file, not a surface store (a zarr directory); {fix}")


def _consolidated(path: Path) -> bool:
    """Whether the store has consolidated metadata (read from its root ``zarr.json``).

    Telling xarray instead of letting it guess avoids its RuntimeWarning for stores without.
    """
    try:
        meta = json.loads((path / "zarr.json").read_text())
        return isinstance(meta, dict) and meta.get("consolidated_metadata") is not None
    except FileNotFoundError:
        return False  # not a zarr group at all: opening it says so
    except (OSError, ValueError) as err:
        raise _unreadable(path, err, "its zarr.json") from None


def _open_existing(path: Path, attrs: dict) -> zarr.Group:
    try:
        group = zarr.open_group(str(path), mode="r+", use_consolidated=_consolidated(path))
        stored = dict(group.attrs)
        group["computed"]
    except LossurfError:
        raise
    except Exception as err:  # any unreadable store is a user-fixable situation here
        if Checksums.exists(path):  # lossurf wrote it: damaged, not foreign
            raise _unreadable(path, err) from None
        raise LossurfError(
            f"{path} exists but is not a lossurf surface store ({type(err).__name__}); "
            "pass a new --out or delete it"
        ) from None
    for key in _IDENTITY:
        default = _IDENTITY_DEFAULTS.get(key)
        if stored.get(key, default) != attrs.get(key, default):
            raise LossurfError(
                f"surface store {path} was computed for a different request ({key} differs: "
                f"{stored.get(key)!r} there, {attrs.get(key)!r} now); pass a new --out or "
                "delete it"
            )
    return group


_TEMPORARY = ".{name}.creating-"


def _create(path: Path, grid: Grid, names, attrs: dict, chunk_shape
            ) -> tuple[zarr.Group, Checksums]:
    """Write the empty store under a temporary sibling name, then rename it into place.

    A kill during creation leaves only the hidden temporary (removed by the next run, which
    holds the store's lock), never a half-made store at ``path``. Returns the store and its
    checksum record (no chunks yet; the coordinates' digests, as read back from disk).
    """
    nan = {n: np.full(grid.num_points, np.nan) for n in names}
    template = _dataset(grid, nan, attrs)
    template["computed"] = (grid.dims, np.zeros(grid.shape, dtype=bool))
    encoding = {n: {"chunks": chunk_shape} for n in template.data_vars}
    tmp = path.with_name(_TEMPORARY.format(name=path.name) + f"{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with warnings.catch_warnings():
            # zarr 3 warns that consolidated metadata is not yet in its v3 spec. Consolidated
            # metadata is what lets a plain `xarray.open_zarr(path)` open the store silently.
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            template.to_zarr(str(tmp), mode="w-", encoding=encoding, consolidated=True)
        written = zarr.open_group(str(tmp), mode="r", use_consolidated=True)
        others = [n for n in written.array_keys() if n not in names and n != "computed"]
        checksums = Checksums(_order(names), {}, array_digests(written, others))
        checksums.write(tmp)
        os.rename(tmp, path)
    except OSError as err:
        raise _write_error(path, err) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return zarr.open_group(str(path), mode="r+", use_consolidated=True), checksums


def _remove_temporaries(path: Path) -> None:
    """Remove temporary stores a killed creation of ``path`` left (call with the lock held)."""
    for leftover in path.parent.glob(_TEMPORARY.format(name=path.name) + "*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _write_error(path: Path, err: OSError) -> LossurfError:
    return LossurfError(
        f"cannot write surface store {path} ({err.strerror or err}); free some space or pass "
        "an --out on a writable disk, then run the same command again to resume"
    )


def lock_path(store: str | Path) -> Path:
    """The directory whose lock guards ``store``: ``.<name>.lock`` beside it.

    Not inside the store: the store is created by renaming a finished temporary into place,
    which an existing folder at its path (holding a lock file) would block; and a lock file
    inside would sit in zarr's view of the group. The lock folder stays after use: removing
    it would let a late opener lock a file that no longer has a name.
    """
    store = Path(store)
    return store.with_name(f".{store.name}.lock")


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
    if store is not None:
        _not_a_file(Path(store), "pass another --out")  # before its lock is made beside it

    if hasattr(evaluator, "plan"):  # strategy, compilation, threads: once for the whole grid
        previous = _previous_attrs(store)  # a resumed grid continues as it began
        decided = evaluator.plan(anchors, grid.flat_coefficients(), previous)
        attrs = {**decided, **(attrs or {})}
    full_attrs = _surface_attrs(evaluator, anchors, grid, reference, attrs)
    task = ChunkTask(evaluator, anchors, grid.flat_coefficients(), reference)
    backend = backend if backend is not None else LocalBackend()
    if store is None:
        chunks = chunk_layout(grid.shape, chunk_points)[1]
        memory: dict[str, np.ndarray] = {}
        items = [(i, chunks[i]) for i in range(len(chunks))]
        with _ProgressBar(progress, grid.num_points, grid.kind) as advance:
            for _, points, values in backend.map(task, items):
                for name, array in values.items():
                    memory.setdefault(name, np.full(grid.num_points, np.nan))[points] = array
                advance(len(points))
        return _dataset(grid, memory, full_attrs)

    path = Path(store)
    # One writer per store, for the whole computation: a second one would interleave its
    # chunks and checksums with ours and report success for work it did not keep.
    with exclusive_lock(lock_path(path), f"surface store {path}"):
        _remove_temporaries(path)
        _fill(path, task, grid, full_attrs, chunk_points, backend, progress)
        return open_surface(path).drop_vars("computed")


def _previous_attrs(store: str | Path | None) -> dict:
    """The attrs of an existing store at ``store`` (best effort: {} if none or unreadable)."""
    if store is None or not Path(store).exists():
        return {}
    try:
        return dict(zarr.open_group(str(store), mode="r").attrs)
    except Exception:  # an unreadable store is reported by _fill, under the lock
        return {}


def _fill(path: Path, task: ChunkTask, grid: Grid, attrs: dict, chunk_points: int,
          backend: Backend, progress: bool) -> None:
    """Compute every chunk of the store at ``path`` that does not verify (see module doc)."""
    group = _open_existing(path, attrs) if path.exists() else None
    checksums: Checksums | None = None
    if group is not None:
        # resume with the store's own chunking, so that every write is whole zarr chunks
        chunk_points = int(np.prod(group["computed"].chunks))
        names = _order([n for n in group.array_keys() if n != "computed" and n not in grid.dims])
        checksums = Checksums.read(path)
        regions = [_region(c, grid) for c in chunk_layout(grid.shape, chunk_points)[1]]
        found = read_chunks(group, names, grid.shape, regions, checksums)
        if found.damaged_points:
            print(f"{path}: recomputing {found.damaged_points} points whose stored values were "
                  "missing or damaged", file=sys.stderr)
        if checksums is None:  # no readable record: start a new one (nothing verified)
            checksums = Checksums(names, {})
        checksums.chunks = {i: checksums.chunks[i] for i in found.verified}
        _repair(path, group, grid, regions, found.verified - found.marked)
        _record_coordinates(path, group, checksums)
        todo = [i for i in range(len(regions)) if i not in found.verified]
    chunk_shape, chunks = chunk_layout(grid.shape, chunk_points)
    if group is None:
        todo = list(range(len(chunks)))
    items = [(i, chunks[i]) for i in todo]
    with _ProgressBar(progress, sum(len(chunks[i]) for i in todo), grid.kind) as advance:
        for index, points, values in backend.map(task, items):
            if group is None:
                group, checksums = _create(path, grid, values, attrs, chunk_shape)
            assert checksums is not None
            region = _region(points, grid)
            shaped = {n: v.reshape((-1, *grid.shape[1:])) for n, v in values.items()}
            try:
                # values, then their checksum, then the mask: a kill in between costs this
                # chunk at most, and a chunk damaged later fails its checksum on resume
                for name in checksums.variables:
                    group[name][region] = shaped[name]
                checksums.chunks[index] = chunk_digest(shaped, checksums.variables)
                checksums.write(path)
                group["computed"][region] = True
            except OSError as err:
                raise _write_error(path, err) from None
            advance(len(points))


def _repair(path: Path, group: zarr.Group, grid: Grid, regions, chunks) -> None:
    """Mark verified chunks computed (their mask was lost) and restore damaged coordinates."""
    try:
        for index in chunks:
            group["computed"][regions[index]] = True
        for dim in grid.dims:
            try:
                same = np.array_equal(np.asarray(group[dim][...]), grid.coords[dim])
            except Exception:  # an unreadable coordinate chunk is rewritten like a wrong one
                same = False
            if not same:
                group[dim][...] = grid.coords[dim]
    except OSError as err:
        raise _write_error(path, err) from None


def _record_coordinates(path: Path, group: zarr.Group, checksums: Checksums) -> None:
    """Record the digests of coordinate arrays the record lacks (a store written before they
    had checksums, or a record rebuilt after damage); call after :func:`_repair`, which has
    made the grid's coordinates right. Recorded digests are kept as they are."""
    others = [n for n in group.array_keys() if n not in checksums.variables and n != "computed"]
    missing = [n for n in others if n not in checksums.coordinates]
    if not missing:
        return
    checksums.coordinates.update(array_digests(group, missing))
    try:
        checksums.write(path)
    except OSError as err:
        raise _write_error(path, err) from None


def _check_coordinates(path: Path, consolidated: bool, checksums: Checksums | None) -> None:
    """Refuse a store whose recorded coordinate arrays no longer verify (one line, naming them)."""
    if checksums is None or not checksums.coordinates:
        return  # nothing recorded (written before coordinates had checksums): nothing to check
    try:
        group = zarr.open_group(str(path), mode="r", use_consolidated=consolidated)
    except Exception as err:  # zarr raises many types for a broken store
        raise _unreadable(path, err) from None
    damaged = damaged_arrays(group, checksums.coordinates)
    if damaged:
        names = ", ".join(repr(n) for n in damaged)
        what = f"its coordinate array {names} is" if len(damaged) == 1 else (
            f"its coordinate arrays {names} are")
        raise LossurfError(
            f"surface store {path} is damaged: {what} unreadable or altered since it was "
            "written; run the same surface command again to repair it"
        )


def open_surface(path: str | Path) -> xr.Dataset:
    """Open a surface store, loaded into memory, with only verified points marked computed.

    For a store written by :func:`compute_surface`, each chunk's values are checked against
    its recorded checksum; a chunk whose values are missing, unreadable or altered reads as
    NaN with ``computed`` False (run the same surface command again to recompute it). Its
    coordinate arrays are checked against theirs too: a damaged one raises (the same surface
    command rewrites it). Other
    zarr stores (written by hand with ``to_zarr``) are read as they are. Never warns.

    Raises:
        LossurfError: the store does not exist, its metadata cannot be read, or a coordinate
            array is damaged.
    """
    path = Path(path)
    if not path.exists():
        raise LossurfError(
            f"surface store {path} does not exist; check the path, or compute it with a "
            "`lossurf surface` command"
        )
    _not_a_file(path, "pass the path of a surface store")
    consolidated = _consolidated(path)
    lossurf_made = Checksums.exists(path)
    checksums = Checksums.read(path) if lossurf_made else None
    _check_coordinates(path, consolidated, checksums)
    try:
        lazy = xr.open_zarr(str(path), consolidated=consolidated)
        coords = {k: lazy[k].load() for k in lazy.coords}
        if not lossurf_made:
            return lazy.load()
        group = zarr.open_group(str(path), mode="r", use_consolidated=consolidated)
    except Exception as err:  # zarr/xarray raise many types for a broken store
        if lossurf_made:
            raise _unreadable(path, err) from None
        raise LossurfError(
            f"{path} is not a readable surface store ({type(err).__name__}); pass the path of "
            "a zarr store written by lossurf"
        ) from None
    var = lazy["computed"]
    shape, rows = tuple(var.shape), int(group["computed"].chunks[0])
    regions = [(slice(r, min(r + rows, shape[0])),) for r in range(0, shape[0], rows)]
    names = [n for n in lazy.data_vars if n != "computed"]
    found = read_chunks(group, names, shape, regions, checksums)
    computed = np.zeros(shape, bool)
    for index in found.verified:
        computed[regions[index]] = True
    data = {n: (lazy[n].dims, v, lazy[n].attrs) for n, v in found.values.items()}
    data = {n: data[n] for n in _order(data)}
    data["computed"] = (var.dims, computed, var.attrs)
    return xr.Dataset(data, coords=coords, attrs=dict(lazy.attrs))


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
