"""Surfaces of your own model from a notebook: lines, basins, planes and functional distance.

Every function takes an ``nn.Module`` (only its architecture is used; it is never modified),
weight vectors as state dicts (or modules; floating tensors in another dtype are cast to the
model's, as ``load_state_dict`` casts), and a data source (see :func:`eval_data`): an
:class:`~lossurf.surface.evaluate.EvalData`; a :class:`lossurf.data.Dataset` with a ``split``,
an optional ``subset`` size and its seed; or a ``torch.utils.data.DataLoader`` or any
re-iterable of ``(x, y)`` batches, read once per call (see :mod:`lossurf.surface.batches`; with
batch norm, pass ``bn_data=train_loader`` when the batches are held-out data). The loss is
cross-entropy unless ``loss_fn(outputs, targets)`` returns another batch mean (see
:mod:`lossurf.objective`). They return xarray Datasets (see
:func:`~lossurf.surface.store.compute_surface`); with ``store=PATH`` the grid is written to a
zarr store as it is computed and a second call resumes it.

Example::

    ds = lossurf.surface.line(model, init_state, final_state, data, range=(-0.5, 2), steps=51)
    ds.loss.plot()
    ds = lossurf.surface.line(model, a, b, train_loader, loss_fn=torch.nn.functional.mse_loss)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from lossurf.backends import Backend
from lossurf.data.base import Dataset, seeded_subset
from lossurf.devices import api_device
from lossurf.errors import LossurfError
from lossurf.objective import LossFn, loss_label
from lossurf.surface.batches import from_batches, is_batches
from lossurf.threads import threads_for, torch_threads
from lossurf.params import (
    StateDict,
    as_state,
    check_compatible,
    distance,
    moving_keys,
    to_dtypes_of,
)
from lossurf.surface.paths import Grid, basin_grid, line_grid
from lossurf.surface.plane import (
    PLANE_POINTS,
    affine_basis,
    affine_grid,
    barycentric_grid,
    bilinear_grid,
)
from lossurf.surface.store import compute_surface

__all__ = ["line", "basin", "plane", "functional_distance", "distance_along", "eval_data"]

#: Plane kinds and how many points each takes (the CLI's --kind choices).
PLANE_KINDS = PLANE_POINTS
#: The splits of a :class:`lossurf.data.Dataset`.
SPLITS = ("train", "test")


def eval_data(
    data: Any, *, split: str | None = "train", subset: int | None = None, seed: int = 0,
    bn_data: Any = None,
) -> tuple[Any, str]:
    """Turn a data source into the evaluator's ``EvalData`` and a description for attrs.

    Args:
        data: an ``EvalData`` (used as is), a :class:`lossurf.data.Dataset`, or a
            ``DataLoader`` / re-iterable of ``(x, y)`` batches (read once; a one-shot
            generator is refused; see :mod:`lossurf.surface.batches`).
        split: ``train`` or ``test`` (Dataset only; default ``train``; None: the default).
            Batch-norm statistics are re-estimated from a fixed, seeded subset of the training
            inputs. Another split than ``train`` with an ``EvalData`` or batches is refused:
            they are the examples to evaluate.
        subset: evaluate a fixed, seeded subset of this many examples (default all; refused
            for an ``EvalData``, which holds the examples to evaluate).
        seed: the subsets' seed (default 0).
        bn_data: batches only: where batch-norm statistics come from (a training loader, a
            list of batches or a tensor of inputs; default: the evaluated batches' inputs).

    Returns:
        ``(EvalData, description)``; the description names the data and hashes its content.
    """
    from lossurf.surface.evaluate import EvalData

    if split is not None and split not in SPLITS:
        raise LossurfError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or subset < 1:
            raise LossurfError(f"subset must be at least 1 example (a whole number), got "
                               f"{subset!r}")
        subset = int(subset)
    if bn_data is not None and (isinstance(data, (EvalData, Dataset)) or not is_batches(data)):
        raise LossurfError(
            "bn_data applies when data is a DataLoader or a list of batches; an EvalData takes "
            "bn_x=..., a Dataset uses its training inputs"
        )
    # split 'train' is every caller's default and passes; another split cannot apply
    if isinstance(data, EvalData):
        if subset is not None:
            raise LossurfError(
                f"subset={subset} does not apply to an EvalData: EvalData holds the examples to "
                "evaluate; pass fewer examples, or pass the dataset and subset=")
        if split not in (None, "train"):
            raise LossurfError(
                f"split={split!r} applies to a lossurf Dataset; an EvalData holds the examples "
                f"to evaluate: build it from that split (EvalData.from_dataset(dataset, "
                f"split={split!r})) or pass the dataset")
        return data, f"custom n={len(data.x)} sha256={_data_hash(data.x, data.y, data.bn_x)}"
    if split not in (None, "train") and not isinstance(data, Dataset) and is_batches(data):
        raise LossurfError(
            f"split={split!r} applies to a lossurf Dataset; a loader's batches are the examples "
            "to evaluate: pass the loader of that split instead")
    split = split or "train"
    if not isinstance(data, Dataset):
        if not is_batches(data):
            raise LossurfError(
                f"data must be a lossurf EvalData or a lossurf.data.Dataset (or a DataLoader / "
                f"list of (x, y) batches), got {type(data).__name__}; wrap tensors as "
                "EvalData(x=..., y=..., task=...)"
            )
        out = from_batches(data, bn_data=bn_data, subset=subset, seed=seed)
        source = "bn_data" if bn_data is not None else "these batches"
        described = f"batches ({type(data).__name__}) n={len(out.x)}"
        if subset is not None:
            described += f" (seeded subset, seed={seed})"
        return out, (f"{described} task={out.task} bn_from={source} "
                     f"sha256={_data_hash(out.x, out.y, out.bn_x)}")
    out = EvalData.from_dataset(data, split=split, subset=subset, seed=seed)
    total = len(data.test_x if split == "test" else data.train_x)
    described = f"{data.name}/{split} n={len(out.x)}"
    if len(out.x) < total:
        described += f" of {total} (seeded subset, seed={seed})"
    return out, f"{described} sha256={_data_hash(out.x, out.y, out.bn_x)}"


def _data_hash(*tensors: torch.Tensor | None) -> str:
    """Short sha256 of the evaluated examples (and BN inputs): part of a store's identity."""
    digest = hashlib.sha256()
    for t in tensors:
        if t is None:
            digest.update(b"none")
            continue
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _make_evaluator(model: nn.Module, data: Any, bn: str, device: Any, options: dict,
                    loss_fn: LossFn | None = None) -> Any:
    """Build the evaluator (imported lazily: ``evaluate`` pulls in the compiled fast paths)."""
    from lossurf.surface.evaluate import Evaluator

    return Evaluator(model, data, bn=bn, device=device, loss_fn=loss_fn, **options)


def _states(model: nn.Module, points: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    from lossurf.surface.evaluate import check_model

    check_model(model)
    # floating weights in another dtype (float64 from numpy) are cast to the model's, as
    # load_state_dict would, and as the evaluator casts floating inputs
    own = as_state(model)
    states = [to_dtypes_of(as_state(p), own) for p in points.values()]
    check_compatible([own] + states, ["the model"] + list(points))
    return states


def _maybe_align(
    model: nn.Module, anchors: list[dict[str, torch.Tensor]], align: bool, attrs: dict | None
) -> tuple[list[dict[str, torch.Tensor]], dict | None]:
    """With ``align``, permute every anchor after the first into the first's coordinates
    (weight matching, :mod:`lossurf.alignment`) and record it in the attrs."""
    if not align:
        return anchors, attrs
    from lossurf.alignment import align_points

    aligned, extra = align_points(model, anchors)
    return aligned, {**(attrs or {}), **extra}


def _run(
    model: nn.Module,
    anchors: list[dict[str, torch.Tensor]],
    grid: Grid,
    data: Any,
    *,
    labels: Sequence[str],
    bn: str,
    split: str,
    subset: int | None,
    seed: int,
    reference: StateDict | nn.Module | None,
    store: str | Path | None,
    device: Any,
    attrs: dict | None,
    chunk_points: int,
    backend: Backend | None,
    progress: bool,
    options: dict,
    loss_fn: LossFn | None,
    bn_data: Any,
) -> xr.Dataset:
    api_device(device)  # a device this machine lacks fails before the data are read
    if store is not None and not isinstance(store, (str, Path)):
        raise LossurfError(f"store must be a path (str or pathlib.Path) of a zarr store, got "
                           f"{type(store).__name__} {store!r}; pass store='surface.zarr' or None")
    ref = None
    if reference is not None:
        own = as_state(model)
        ref = to_dtypes_of(as_state(reference), own)
        check_compatible([own, ref], ["the model", "reference"])
    data, described = eval_data(data, split=split, subset=subset, seed=seed, bn_data=bn_data)
    evaluator = _make_evaluator(model, data, bn, device, options, loss_fn)
    extra = {"anchor_labels": list(labels), "bn": bn, "data": described}
    if loss_fn is not None:  # absent for cross-entropy, so existing stores keep resuming
        extra["loss"] = loss_label(loss_fn)
    extra.update(attrs or {})
    with torch_threads(threads_for(model)):
        return compute_surface(
            evaluator, anchors, grid, store=store, reference=ref, attrs=extra,
            chunk_points=chunk_points, backend=backend, progress=progress,
        )


def line(
    model: nn.Module,
    start: StateDict | nn.Module,
    end: StateDict | nn.Module,
    data: Any,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    range: tuple[float, float] = (0.0, 1.0),
    steps: int = 21,
    bn: str = "recompute",
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    reference: StateDict | nn.Module | None = None,
    store: str | Path | None = None,
    device: Any = None,
    attrs: dict | None = None,
    chunk_points: int = 32,
    backend: Backend | None = None,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    align: bool = False,
    **evaluator_options: Any,
) -> xr.Dataset:
    """Loss and accuracy along ``theta(alpha) = (1 - alpha) * start + alpha * end``.

    alpha = 0 is ``start`` (the CLI's ``--from``), alpha = 1 is ``end`` (``--to``); a range
    past [0, 1] extrapolates (paper eq. 2, Fig. 10).

    Args:
        model: the architecture (never modified).
        start, end: the end points' state dicts.
        data: an ``EvalData``, a ``lossurf.data.Dataset``, a ``DataLoader`` or a list of
            ``(x, y)`` batches (see :func:`eval_data`).
        alphas: explicit alpha values; override ``range``/``steps``.
        range: alpha range (default (0, 1)).
        steps: number of alphas (default 21, at least 2).
        bn: batch-norm policy: ``recompute`` (default), ``interpolate`` or ``batch``.
        split, subset, seed: which examples (see :func:`eval_data`; default the training
            split, whose loss the optimizers minimized).
        reference: also compute ``fdist`` and ``disagreement`` from this weight vector.
        store: zarr store path (resumable); None keeps results in memory.
        device: where to evaluate (default: the evaluator's choice).
        attrs: extra provenance (runs, checkpoints) for the Dataset's attrs.
        chunk_points, backend, progress: see :func:`~lossurf.surface.store.compute_surface`.
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch's mean loss (default None:
            cross-entropy); needed for real-valued targets. Recorded in attrs ``loss``.
        bn_data: batch-norm statistics' source when ``data`` is a loader (see
            :func:`eval_data`).
        align: permute ``end``'s hidden units into ``start``'s coordinates first (weight
            matching, :func:`lossurf.alignment.align`; the function of ``end`` is unchanged);
            attrs ``alignment_*`` record the permutation's hash and the objective.
        **evaluator_options: passed to ``Evaluator`` (batch size, strategy, ...).

    Returns:
        A Dataset over ``alpha`` with ``loss``, ``accuracy`` (not for regression; and
        ``fdist``, ``disagreement`` with a reference).
    """
    anchors = _states(model, {"start": start, "end": end})
    anchors, attrs = _maybe_align(model, anchors, align, attrs)
    grid = line_grid(alphas, range=range, steps=steps)
    return _run(
        model, anchors, grid, data, labels=("start", "end"), bn=bn, split=split, subset=subset,
        seed=seed, reference=reference, store=store, device=device, attrs=attrs,
        chunk_points=chunk_points, backend=backend, progress=progress, options=evaluator_options,
        loss_fn=loss_fn, bn_data=bn_data,
    )


def distance_along(
    model: nn.Module,
    reference: StateDict | nn.Module,
    start: StateDict | nn.Module,
    end: StateDict | nn.Module,
    data: Any,
    **options: Any,
) -> xr.Dataset:
    """Functional distance and disagreement from ``reference`` to every point of a line.

    The paper's Table 1 upper triangle uses ``reference = start``: the distance from the
    first minimum to the networks between it and the second. Takes the options of
    :func:`line` (``split`` defaults to ``test`` here, as in :func:`functional_distance`);
    returns its Dataset, which then holds ``fdist`` and ``disagreement`` beside the loss.
    """
    if isinstance(data, Dataset):  # an EvalData or batches are the examples themselves
        options.setdefault("split", "test")
    return line(model, start, end, data, reference=reference, **options)


def basin(
    model: nn.Module,
    minimum: StateDict | nn.Module,
    init: StateDict | nn.Module,
    data: Any,
    *,
    distances: Sequence[float] | np.ndarray | None = None,
    max_distance: float | None = None,
    min_distance: float | None = None,
    steps: int = 41,
    bn: str = "recompute",
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    store: str | Path | None = None,
    device: Any = None,
    attrs: dict | None = None,
    chunk_points: int = 32,
    backend: Backend | None = None,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    **evaluator_options: Any,
) -> xr.Dataset:
    """The basin profile ``theta(l) = minimum + l * (init - minimum) / ||init - minimum||``.

    Paper eq. 1 (Fig. 6): lambda is an absolute weight-space distance over the model's
    parameters; lambda = 0 is the minimum, lambda = ``attrs['geometry_init_distance']`` the
    initialization.

    Args:
        model, data, bn, split, subset, seed, store, device, attrs, chunk_points, backend,
            progress, loss_fn, bn_data, evaluator_options: as in :func:`line`.
        minimum: the trained weights (``theta1``).
        init: the initialization (``theta0``).
        distances: explicit lambda values; override the range.
        max_distance: largest lambda (default 1.5 times the distance to the init).
        min_distance: smallest lambda (default ``-max_distance / 3``).
        steps: number of lambdas (default 41).

    Returns:
        A Dataset over ``lambda``.
    """
    anchors = _states(model, {"minimum": minimum, "init": init})
    # lambda is a distance over the parameters (moving_keys, no buffers), as documented; the
    # model's other floating buffers still move along the same line (see lossurf.params)
    d = distance(anchors[0], anchors[1], moving_keys(model))
    grid = basin_grid(
        d, distances, max_distance=max_distance, min_distance=min_distance, steps=steps
    )
    return _run(
        model, anchors, grid, data, labels=("minimum", "init"), bn=bn, split=split,
        subset=subset, seed=seed, reference=None, store=store, device=device, attrs=attrs,
        chunk_points=chunk_points, backend=backend, progress=progress, options=evaluator_options,
        loss_fn=loss_fn, bn_data=bn_data,
    )


def plane(
    model: nn.Module,
    points: Sequence[StateDict | nn.Module],
    data: Any,
    *,
    kind: str = "barycentric",
    steps: int = 21,
    margin: float = 0.2,
    range: tuple[float, float] = (0.0, 1.0),
    bn: str = "recompute",
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    reference: StateDict | nn.Module | None = None,
    store: str | Path | None = None,
    device: Any = None,
    attrs: dict | None = None,
    chunk_points: int = 32,
    backend: Backend | None = None,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    align: bool = False,
    **evaluator_options: Any,
) -> xr.Dataset:
    """Loss over a plane of weight vectors.

    Kinds: ``barycentric`` (3 points, paper eqs. 6-8, dims ``alpha, beta``), ``bilinear``
    (4 points, eqs. 3-5, dims ``alpha, beta``), ``affine`` (3 points, orthonormal coordinates
    ``x, y`` in units of weight-space distance, extended by ``margin``; the anchors' positions
    are in attrs ``geometry_anchor_x``/``geometry_anchor_y``).

    Args:
        points: the weight vectors (3 or 4, by kind).
        kind: ``barycentric`` (default), ``bilinear`` or ``affine``.
        steps: points per axis (default 21).
        margin: affine only: extension past the anchors, as a fraction of the extent (0.2).
        range: barycentric and bilinear only: range of alpha and beta (default (0, 1)).
        align: align every point after the first to the first (see :func:`line`).
        Others: as in :func:`line`.

    Returns:
        A Dataset over the plane's two coordinates.
    """
    if kind not in PLANE_KINDS:
        raise LossurfError(f"unknown plane kind {kind!r}; choose one of {sorted(PLANE_KINDS)}")
    points = list(points)
    if len(points) != PLANE_KINDS[kind]:
        raise LossurfError(
            f"a {kind} plane needs exactly {PLANE_KINDS[kind]} points, got {len(points)}"
        )
    labels = [f"p{i}" for i in np.arange(len(points))]  # `range` is shadowed here
    anchors = _states(model, dict(zip(labels, points)))
    keys = moving_keys(model)
    for i, first in enumerate(anchors):  # `range` is shadowed here
        for j, second in enumerate(anchors[i + 1:], start=i + 1):
            if all(torch.equal(first[k], second[k]) for k in keys):
                raise LossurfError(
                    f"points {i + 1} and {j + 1} of the {kind} plane are the same weights; a "
                    f"plane needs {len(anchors)} different points (for two, use a line)")
    anchors, attrs = _maybe_align(model, anchors, align, attrs)
    if kind == "bilinear":
        grid = bilinear_grid(steps=steps, range=range)
    elif kind == "barycentric":
        grid = barycentric_grid(steps=steps, range=range)
    else:
        basis = affine_basis(anchors, moving_keys(model))
        grid = affine_grid(basis["x"], basis["y"], steps=steps, margin=margin)
    return _run(
        model, anchors, grid, data, labels=labels, bn=bn, split=split, subset=subset, seed=seed,
        reference=reference, store=store, device=device, attrs=attrs, chunk_points=chunk_points,
        backend=backend, progress=progress, options=evaluator_options,
        loss_fn=loss_fn, bn_data=bn_data,
    )


def functional_distance(
    model: nn.Module,
    a: StateDict | nn.Module,
    b: StateDict | nn.Module,
    data: Any,
    *,
    bn: str = "recompute",
    split: str | None = None,
    subset: int | None = None,
    seed: int = 0,
    device: Any = None,
    bn_data: Any = None,
    **evaluator_options: Any,
) -> dict[str, float]:
    """Functional distance and label disagreement between two weight vectors (paper eq. 4.1).

    ``fdist = sqrt(mean_i ||softmax(F(x_i, a)) - softmax(F(x_i, b))||^2)`` and
    ``disagreement`` is the fraction of examples whose predicted labels differ. Like the
    paper, it is measured on held-out data: ``split`` defaults to ``test`` for a Dataset here
    (the surface functions default to ``train``, the loss being minimized). ``data`` takes every form
    :func:`eval_data` does; with a loader of held-out batches and batch norm, pass
    ``bn_data=train_loader``. It needs class outputs (not regression).

    Returns:
        ``{"fdist", "disagreement", "accuracy_a", "accuracy_b"}`` (floats; the accuracies of
        ``a`` and ``b`` on the same examples, which bound the disagreement).
    """
    anchors = _states(model, {"a": a, "b": b})
    api_device(device)
    if split is None and isinstance(data, Dataset):
        split = "test"  # held-out data, as the paper measures it
    data, _ = eval_data(data, split=split, subset=subset, seed=seed, bn_data=bn_data)
    if data.task == "regression":
        raise LossurfError("functional distance compares predicted class probabilities (paper "
                           "eq. 4.1); it needs classification or language-model data, not "
                           "regression")
    evaluator = _make_evaluator(model, data, bn, device, evaluator_options)
    with torch_threads(threads_for(model)):
        out = evaluator.evaluate(anchors, np.eye(2), reference=anchors[0])  # a, then b
    values = {k: np.asarray(out[k], dtype=float).reshape(-1) for k in
              ("fdist", "disagreement", "accuracy")}
    return {"fdist": float(values["fdist"][1]), "disagreement": float(values["disagreement"][1]),
            "accuracy_a": float(values["accuracy"][0]), "accuracy_b": float(values["accuracy"][1])}
