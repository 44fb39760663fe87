"""Hessian results in a zarr store, one part per analysis, each written atomically.

A store is a zarr group whose attrs identify what was analysed (weights, data, architecture,
precision) and carry the provenance (end point labels, checkpoint files and hashes, versions).
Each analysis (``topk``, ``trace``, ``density``, ``sharpness``) is a child group holding one
xarray Dataset. A part is written to a temporary directory inside the store and renamed into
place, so it is either complete or absent: a killed run loses only the part in flight, and the
same request again reuses every finished part. A store made for other weights or data, or a
part made with other settings, is refused rather than mixed.

    xr.open_zarr(store, group="topk")      # one part
    lossurf.hessian.store.load(store)      # every part, merged into one Dataset
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import xarray as xr
import zarr

from lossurf.errors import LossurfError

__all__ = ["PARTS", "check_path", "check_store", "read_part", "write_part", "load"]

#: The analyses, in the order a merged Dataset lists them.
PARTS = ("topk", "trace", "density", "sharpness")
#: Root attrs that must match for a store to be reused.
IDENTITY = ("lossurf_kind", "weights_hash", "data", "parameters", "architecture", "dtype")


def check_path(path: Path) -> None:
    """Refuse a store path that is, or lies inside, a regular file (before anything is made)."""
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise LossurfError(f"{place} is a file, not a Hessian store (a zarr directory) "
                                   "or a folder; pass another --out")
            return


def _open_root(path: Path) -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode="r+")
    except Exception as err:  # any unreadable store is a user-fixable situation here
        raise LossurfError(f"{path} exists but is not a lossurf Hessian store "
                           f"({type(err).__name__}); pass a new --out or delete it") from None


def check_store(path: Path, attrs: dict[str, Any]) -> None:
    """Create the store with ``attrs`` or check that an existing one has the same identity.

    Leftovers of a killed write (temporary part directories) are removed.
    """
    if path.exists() and (path / "zarr.json").exists():
        stored = dict(_open_root(path).attrs)
        for key in IDENTITY:
            if stored.get(key) != attrs.get(key):
                raise LossurfError(
                    f"Hessian store {path} was computed for a different request ({key} differs: "
                    f"{stored.get(key)!r} there, {attrs.get(key)!r} now); pass a new --out or "
                    "delete it")
    else:
        path.mkdir(parents=True, exist_ok=True)
        zarr.open_group(str(path), mode="w", attributes=attrs)
    for leftover in path.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _request_text(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True)


def read_part(path: Path, part: str, request: dict[str, Any]) -> xr.Dataset | None:
    """The stored Dataset of ``part`` if it was made with ``request``; None if absent."""
    if not (path / part / "zarr.json").exists():
        return None
    ds = xr.open_zarr(str(path), group=part, consolidated=False).load()
    stored = ds.attrs.get(f"{part}_request")
    if stored != _request_text(request):
        raise LossurfError(
            f"the {part} part of {path} was computed with other settings ({stored} there, "
            f"{_request_text(request)} now); pass a new --out, or delete {path / part}")
    return ds


def write_part(path: Path, part: str, ds: xr.Dataset, request: dict[str, Any]) -> xr.Dataset:
    """Write ``ds`` as ``part`` of the store atomically (temporary directory, then rename)."""
    ds = ds.copy()
    ds.attrs[f"{part}_request"] = _request_text(request)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{part}-", dir=path))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            ds.to_zarr(str(tmp / "part"), mode="w-", consolidated=False)
        os.replace(tmp / "part", path / part)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ds


def load(path: str | Path) -> xr.Dataset:
    """Every part of a Hessian store, merged into one Dataset (root attrs + each part's)."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise LossurfError(f"{path} is not a lossurf Hessian store; compute one with "
                           "`lossurf hessian` or lossurf.hessian.analyze(..., store=PATH)")
    attrs = dict(_open_root(path).attrs)
    parts = [xr.open_zarr(str(path), group=p, consolidated=False).load()
             for p in PARTS if (path / p / "zarr.json").exists()]
    for ds in parts:
        attrs.update(ds.attrs)
    merged = xr.merge(parts, combine_attrs="drop") if parts else xr.Dataset()
    merged.attrs = attrs
    return merged
