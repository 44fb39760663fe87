"""Which chunks of a surface store really hold their values: per-chunk sha256 checksums.

A store's boolean ``computed`` mask alone can lie: a chunk file deleted, truncated or
overwritten after the mask was set reads back as NaN (zarr's fill value) or fails to
decode, and the mask still says the points are done. So every chunk also gets a checksum,
the sha256 of its values, written after the values and before the mask. A chunk counts as
computed only when its values read back and hash to the recorded checksum.

The checksums live in one small JSON file, ``<store>/computed/lossurf-sha256.json``, beside
the mask they vouch for. zarr never lists the inside of an array's folder (it computes chunk
keys), so the file is invisible to ``xarray.open_zarr`` and ``zarr.open_group`` with or
without consolidated metadata; a file at the store's root would make zarr warn ("not
recognized as a component of a Zarr hierarchy") whenever it lists the group. The file is
replaced atomically after each chunk (:func:`lossurf.runs.atomic_write_bytes`).

The other arrays of a store (its coordinates: ``alpha``, ``beta``, ``distance``, ...) are
written once, when the store is made, and get one checksum each (:func:`array_digest`, over
dtype, shape and values) under ``coordinates``: a reader refuses a store whose coordinate no
longer verifies (an axis that silently runs to 32768 would be drawn), and the surface command
rewrites it. Records written before coordinates had checksums lack the key; their stores are
read without the check and gain it on their next resume.

Format::

    {"format": 1, "variables": ["loss", "accuracy"], "chunks": {"0": "<sha256 hex>", ...},
     "coordinates": {"alpha": "<sha256 hex>", ...}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossurf.runs import atomic_write_bytes

__all__ = ["CHECKSUM_FILE", "Checksums", "chunk_digest", "array_digest", "array_digests",
           "damaged_arrays", "read_chunks", "ChunkRead"]

#: The checksum file's path inside a store.
CHECKSUM_FILE = "computed/lossurf-sha256.json"
_FORMAT = 1


def chunk_digest(values: Mapping[str, np.ndarray], names: Sequence[str]) -> str:
    """sha256 (hex) of one chunk's values: each variable of ``names`` as float64 bytes."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(values[name], dtype="<f8").tobytes())
    return digest.hexdigest()


def array_digest(values: np.ndarray) -> str:
    """sha256 (hex) of a whole array: its dtype, shape and little-endian bytes."""
    values = np.asarray(values)
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    digest = hashlib.sha256()
    digest.update(f"{values.dtype.str}{values.shape}".encode() + b"\0")
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def _read_array(group: Any, name: str) -> np.ndarray | None:
    """A whole array of a zarr group, or None when it cannot be read."""
    try:
        return np.asarray(group[name][...])
    except Exception:  # missing metadata, undecodable chunk: zarr raises many types
        return None


def array_digests(group: Any, names: Iterable[str]) -> dict[str, str]:
    """:func:`array_digest` of each array of ``names`` that can be read."""
    out = {}
    for name in names:
        values = _read_array(group, name)
        if values is not None:
            out[name] = array_digest(values)
    return out


def damaged_arrays(group: Any, recorded: Mapping[str, str]) -> list[str]:
    """The arrays of ``recorded`` that cannot be read or no longer match their digest."""
    damaged = []
    for name, expected in recorded.items():
        values = _read_array(group, name)
        if values is None or array_digest(values) != expected:
            damaged.append(name)
    return damaged


@dataclass
class Checksums:
    """The checksum record of one store: its variables, a digest per finished chunk and one
    per coordinate array (empty for records written before those existed)."""

    variables: list[str]
    chunks: dict[int, str]
    coordinates: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, store: Path) -> "Checksums | None":
        """The store's record, or None when it has none or it cannot be read (then no chunk
        can be trusted, which is what None means to the caller)."""
        try:
            payload = json.loads((Path(store) / CHECKSUM_FILE).read_text())
            if payload.get("format") != _FORMAT:
                return None
            coordinates = payload.get("coordinates", {})
            return cls([str(v) for v in payload["variables"]],
                       {int(k): str(v) for k, v in payload["chunks"].items()},
                       {str(k): str(v) for k, v in coordinates.items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def exists(store: Path) -> bool:
        """Whether the store has a checksum file at all (lossurf wrote it), readable or not."""
        return (Path(store) / CHECKSUM_FILE).is_file()

    def write(self, store: Path) -> None:
        """Replace the store's record atomically."""
        payload = {"format": _FORMAT, "variables": self.variables,
                   "chunks": {str(k): v for k, v in sorted(self.chunks.items())},
                   "coordinates": dict(sorted(self.coordinates.items()))}
        atomic_write_bytes(Path(store) / CHECKSUM_FILE, json.dumps(payload).encode())


@dataclass
class ChunkRead:
    """What a store's chunks really hold.

    Attributes:
        values: every variable as a float64 array of the grid's shape; NaN outside verified
            chunks.
        verified: chunk indices whose values read back and match their checksum.
        marked: chunk indices the ``computed`` mask (fully) marks as computed.
        damaged_points: points marked computed (by the mask or a checksum) whose values are
            missing, unreadable or do not match their checksum.
    """

    values: dict[str, np.ndarray]
    verified: set[int]
    marked: set[int]
    damaged_points: int


def _read(array: Any, region: tuple[slice, ...]) -> np.ndarray | None:
    """One chunk of a zarr array, or None when it cannot be read (garbage, truncated file)."""
    try:
        return np.asarray(array[region])
    except Exception:  # zarr raises codec-specific errors (RuntimeError, ValueError, ...)
        return None


def read_chunks(
    group: Any,
    names: Sequence[str],
    shape: tuple[int, ...],
    regions: Sequence[tuple[slice, ...]],
    checksums: Checksums | None,
) -> ChunkRead:
    """Read a store chunk by chunk and verify each chunk against its checksum.

    Args:
        group: the store's zarr group (with ``computed`` and the variables).
        names: the variables to read (those of ``checksums``, when there is a record).
        shape: the grid's shape.
        regions: the zarr region of each chunk (whole rows of the first dim).
        checksums: the store's record; None trusts no chunk.

    Returns:
        A :class:`ChunkRead`. Nothing raises for a damaged chunk: it is simply not verified.
    """
    names = list(checksums.variables) if checksums is not None else list(names)
    arrays = {}
    for n in names:
        try:
            arrays[n] = group[n]
        except Exception:  # a variable whose metadata is gone cannot verify any chunk
            pass
    values = {n: np.full(shape, np.nan) for n in names}
    verified, marked, damaged = set(), set(), 0
    for index, region in enumerate(regions):
        mask = _read(group["computed"], region)
        is_marked = mask is not None and bool(mask.all())
        if is_marked:
            marked.add(index)
        expected = checksums.chunks.get(index) if checksums is not None else None
        if not is_marked and expected is None:
            continue  # never finished: nothing to verify, nothing to report
        chunk = {n: _read(arrays[n], region) if n in arrays else None for n in names}
        readable = all(v is not None for v in chunk.values())
        if expected is not None and readable and chunk_digest(chunk, names) == expected:
            verified.add(index)
            for n in names:
                values[n][region] = chunk[n]
        else:
            first = region[0]
            damaged += int(np.prod((first.stop - first.start, *shape[1:])))
    return ChunkRead(values, verified, marked, damaged)
