"""Low-loss curves between two minima from a notebook: fit the bend, evaluate along the curve.

Example::

    bend = lossurf.curves.fit_curve(model, w1, w2, dataset, kind="bezier", epochs=20)
    ds = lossurf.curves.curve_surface(model, w1, bend, w2, dataset, kind="bezier", steps=21)
    ds.loss.max(), ds.loss_line.max()     # along the curve, and along the straight line

:func:`curve_surface` runs the one surface evaluator (``compute_surface``) twice over the same
``t``: on the curve's grid (anchors start, bend, end) and on the straight line's (start, end).
The result is one Dataset over ``t`` with ``loss``, ``accuracy`` (the curve) and
``loss_line``, ``accuracy_line``; with ``store=PATH`` both grids are computed into resumable
zarr stores in the hidden folder ``.<name>.parts`` beside ``PATH`` and the Dataset is then
written to ``PATH`` (atomically, by rename).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from lossurf.curves.bezier import CURVE_KINDS, check_kind, chord_grid, curve_grid
from lossurf.curves.checkpoint import fit_in
from lossurf.curves.train import CurveTrainer
from lossurf.devices import api_device
from lossurf.errors import LossurfError
from lossurf.locks import exclusive_lock
from lossurf.objective import LossFn, loss_label
from lossurf.params import StateDict, as_state, check_compatible, moving_keys, distance
from lossurf.surface.api import eval_data
from lossurf.surface.store import compute_surface, lock_path, open_surface
from lossurf.threads import threads_for, torch_threads

__all__ = ["fit_curve", "curve_surface", "CURVE_KINDS"]

#: The curve's variables get this suffix for the straight line's values.
LINE_SUFFIX = "_line"


def fit_curve(
    model: nn.Module,
    start: StateDict | nn.Module,
    end: StateDict | nn.Module,
    data: Any,
    *,
    kind: str = "bezier",
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    optimizer: str = "sgdm",
    optimizer_options: Mapping | None = None,
    loss_fn: LossFn | None = None,
    device: Any = None,
    directory: str | Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train the bend of a curve between ``start`` and ``end`` (Garipov et al. 2018).

    Minimizes the loss averaged over ``t ~ U(0, 1)`` (one ``t`` per minibatch) with the bend
    initialized at the midpoint; the end points stay fixed.

    Args:
        model: the architecture (never modified).
        start, end: the end points (state dicts or modules).
        data: a :class:`lossurf.data.Dataset` (its training split), an ``EvalData`` or a tuple
            ``(x, y)`` of training tensors.
        kind: ``bezier`` (quadratic Bézier, default) or ``chain`` (polygonal chain).
        epochs: passes over the data (default 10).
        lr, optimizer, optimizer_options: the optimizer of :mod:`lossurf.optim` (default
            ``sgdm`` at 0.05).
        batch_size: examples per minibatch (default 64).
        seed: minibatch order, ``t`` draws and dropout (default 0).
        loss_fn: ``loss_fn(outputs, targets)``, a batch mean (default cross-entropy).
        device: where to train (default CPU).
        directory: checkpoint folder: the fit resumes after its last finished epoch, and a
            finished fit is read back (see :mod:`lossurf.curves.checkpoint`). None: in memory.
        on_epoch: called with ``(epoch, mean minibatch loss)`` after each trained epoch.

    Returns:
        The bend as a state dict of the architecture (BN statistics: the end points' mean).
    """
    epochs = _positive(epochs, "epochs")
    trainer = CurveTrainer(model, start, end, data, kind=kind, lr=lr, batch_size=batch_size,
                           seed=seed, optimizer=optimizer, optimizer_options=optimizer_options,
                           loss_fn=loss_fn, device=device)
    with torch_threads(threads_for(model)):
        if directory is None:
            for epoch in range(1, epochs + 1):
                loss = trainer.train_epoch(epoch)
                if on_epoch is not None:
                    on_epoch(epoch, loss)
            return trainer.bend_state()
        request = fit_request(start, end, kind=kind, epochs=epochs, lr=lr, batch_size=batch_size,
                              seed=seed, optimizer=optimizer, optimizer_options=optimizer_options,
                              loss_fn=loss_fn, data=data)
        bend, _, _ = fit_in(directory, trainer, epochs, request, on_epoch=on_epoch)
        return bend


def fit_request(start: Any, end: Any, *, kind: str, epochs: int, lr: float, batch_size: int,
                seed: int, optimizer: str, optimizer_options: Mapping | None,
                loss_fn: LossFn | None, data: Any) -> dict:
    """The identity of a fit (what a checkpoint folder must have been made for)."""
    from lossurf.params import state_hash
    from lossurf.curves.train import train_data

    train = train_data(data)
    described = eval_data(_as_eval(train))[1]
    return {"kind": kind, "epochs": epochs, "lr": float(lr), "batch_size": batch_size,
            "seed": seed, "optimizer": optimizer, "optimizer_options": dict(optimizer_options or {}),
            "loss": loss_label(loss_fn), "start_hash": state_hash(as_state(start)),
            "end_hash": state_hash(as_state(end)), "data": described}


def _as_eval(train: Any) -> Any:
    from lossurf.surface.evaluate import EvalData

    task = "regression" if train.y.is_floating_point() else (
        "language_model" if train.y.dim() == 2 else "classification")
    return EvalData(train.x, train.y, task)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LossurfError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def curve_surface(
    model: nn.Module,
    start: StateDict | nn.Module,
    bend: StateDict | nn.Module,
    end: StateDict | nn.Module,
    data: Any,
    *,
    kind: str = "bezier",
    steps: int = 21,
    ts: Sequence[float] | np.ndarray | None = None,
    bn: str = "recompute",
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    store: str | Path | None = None,
    device: Any = None,
    attrs: dict | None = None,
    chunk_points: int = 32,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    **evaluator_options: Any,
) -> xr.Dataset:
    """Loss and accuracy along the curve and along the straight line, over the same ``t``.

    Args:
        model: the architecture (never modified).
        start, bend, end: the curve's anchors (``bend`` from :func:`fit_curve`).
        data: as :func:`lossurf.surface.line` takes it (Dataset, EvalData, loader, batches).
        kind: ``bezier`` or ``chain``.
        steps: evenly spaced t in [0, 1] (default 21); ``ts`` gives them explicitly.
        bn: batch-norm policy (default ``recompute``: statistics re-estimated at every t).
        split, subset, seed, device, chunk_points, progress, loss_fn, bn_data,
            evaluator_options: as in :func:`lossurf.surface.line`.
        store: zarr store for the result (resumable; see the module doc); None: in memory.
        attrs: extra provenance for the Dataset's attrs.

    Returns:
        A Dataset over ``t`` with ``loss``, ``accuracy``, ``loss_line``, ``accuracy_line``
        (no accuracies for regression) and attrs: ``lossurf_kind`` (``curve-bezier`` or
        ``curve-chain``), anchor hashes, the straight line's, ``loss_max``, ``loss_line_max``.
    """
    from lossurf.surface.evaluate import Evaluator

    check_kind(kind)
    device = api_device(device)
    anchors = [as_state(start), as_state(bend), as_state(end)]
    check_compatible([as_state(model)] + anchors, ["the model", "start", "bend", "end"])
    grids = curve_grid(kind, ts, steps=steps), chord_grid(ts, steps=steps)
    evaluation, described = eval_data(data, split=split, subset=subset, seed=seed, bn_data=bn_data)
    extra = {"bn": bn, "data": described, "curve_kind": kind,
             "anchor_labels": ["start", "bend", "end"]}
    if loss_fn is not None:
        extra["loss"] = loss_label(loss_fn)
    extra.update(attrs or {})
    evaluator = Evaluator(model, evaluation, bn=bn, device=device, loss_fn=loss_fn,
                          **evaluator_options)
    keys = moving_keys(model)
    geometry = {"chord_length": distance(anchors[0], anchors[2], keys),
                "bend_offset": distance(anchors[1], _mid(anchors[0], anchors[2], keys), keys)}
    parts_dir = None if store is None else _parts(Path(store))

    def run(grid, states, name):
        part = None if parts_dir is None else parts_dir / f"{name}.zarr"
        with torch_threads(threads_for(model)):
            return compute_surface(evaluator, states, grid, store=part, attrs=extra,
                                   chunk_points=chunk_points, progress=progress)

    if store is None:
        return _combine(run(grids[0], anchors, "curve"), run(grids[1], [anchors[0], anchors[2]], "line"), geometry)
    path = Path(store)
    with exclusive_lock(lock_path(path), f"curve store {path}"):
        curve = run(grids[0], anchors, "curve")
        line = run(grids[1], [anchors[0], anchors[2]], "line")
        result = _combine(curve, line, geometry)
        if path.exists():
            existing = open_surface(path)
            same = all(existing.attrs.get(k) == result.attrs.get(k) for k in _IDENTITY)
            if not same:
                raise LossurfError(
                    f"curve store {path} was computed for a different request; pass a new --out "
                    "or delete it"
                )
            return existing
        _write(path, result)
        return open_surface(path)


_IDENTITY = ("lossurf_kind", "grid_fingerprint", "anchor_hashes", "line_grid_fingerprint",
             "line_anchor_hashes", "bn", "data")


def _mid(a: StateDict, b: StateDict, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    return {k: 0.5 * (a[k].double() + b[k].double()) for k in keys}


def _parts(path: Path) -> Path:
    """Where the resumable stores of the curve's and the line's grids live."""
    return path.with_name(f".{path.name}.parts")


def _combine(curve: xr.Dataset, line: xr.Dataset, geometry: dict) -> xr.Dataset:
    out = curve.copy()
    for name in line.data_vars:
        out[f"{name}{LINE_SUFFIX}"] = line[name]
    attrs = dict(curve.attrs)
    attrs.update(line_grid_fingerprint=line.attrs["grid_fingerprint"],
                 line_anchor_hashes=line.attrs["anchor_hashes"],
                 line_geometry=line.attrs.get("geometry", ""),
                 loss_max=float(np.nanmax(curve["loss"].values)),
                 loss_line_max=float(np.nanmax(line["loss"].values)),
                 **{f"geometry_{k}": float(v) for k, v in geometry.items()})
    out.attrs = attrs
    return out


def _write(path: Path, ds: xr.Dataset) -> None:
    """Write ``ds`` under a hidden temporary name and rename it into place."""
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            ds.to_zarr(str(tmp), mode="w-", consolidated=True)
        os.rename(tmp, path)
    except OSError as err:
        raise LossurfError(f"cannot write curve store {path} ({err.strerror or err}); free some "
                           "space or pass an --out on a writable disk") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
