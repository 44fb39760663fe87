"""Evaluation data from a ``torch.utils.data.DataLoader`` or any re-iterable of ``(x, y)`` batches.

The evaluator runs every weight vector over the same examples, so the batches are read ONCE
per API call and concatenated into an :class:`~lossurf.surface.evaluate.EvalData` (in memory,
on CPU; the evaluator moves them to its device). The mean loss over them is therefore exactly
the loss over those examples, whatever the loader's batch sizes, and equals what the same
examples give passed as one ``EvalData``.

- One-shot iterators (a generator, ``iter(loader)``) are refused: a call could not read them
  again, and a second call would silently see nothing. Pass the loader itself or a list.
- A shuffling loader gives the same set of examples in another order; the losses are the same,
  but a ``subset`` then picks other examples: use ``shuffle=False`` with ``subset``.
- Random augmentation in the loader's dataset is applied as it is read (turn it off for
  evaluation).
- Batch-norm statistics (policy ``recompute``) come from ``bn_data`` when given (a training
  loader, a re-iterable of batches, or a tensor of training inputs), else from the inputs of
  the evaluated batches themselves, which is right when they are training batches (the
  surfaces' default) and wrong for held-out data: pass ``bn_data=train_loader`` there. Either
  way a fixed, seeded subset of ``bn_examples`` inputs is used, as ``EvalData.from_dataset``
  does.

The task is inferred from the targets: floating point -> ``regression`` (needs a ``loss_fn``),
integer ``[N]`` -> ``classification``, integer ``[N, T]`` with integer inputs of the same shape
-> ``language_model``; pass ``task=`` to :func:`from_batches` for anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from lossurf.data.base import seeded_subset
from lossurf.errors import LossurfError

__all__ = ["from_batches", "infer_task", "is_batches", "read_inputs"]


def is_batches(data: Any) -> bool:
    """Whether ``data`` looks like an iterable of batches (a DataLoader, list, ...), rather
    than a tensor, mapping or string."""
    if isinstance(data, (torch.Tensor, np.ndarray, Mapping, str, bytes)):
        return False
    return isinstance(data, Iterable)


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise LossurfError(f"{what} is a {type(value).__name__}; batches must hold tensors")
    if value.dim() == 0:
        raise LossurfError(f"{what} is a scalar; batches need a leading batch dimension")
    return value.detach().cpu()


def _iterate(data: Any, what: str) -> Iterator[Any]:
    if iter(data) is data:  # generators, iter(loader), file-like streams
        raise LossurfError(
            f"{what} is a one-shot iterator ({type(data).__name__}) and could be read only once; "
            "pass the DataLoader itself or a list of (x, y) batches"
        )
    return iter(data)


def _pairs(data: Any, what: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if isinstance(data, (tuple, list)) and data and all(
            isinstance(t, (torch.Tensor, np.ndarray)) for t in data):
        # (x, y) itself rather than a list of batches (whose items are pairs): say so
        raise LossurfError(
            f"{what} must be a lossurf EvalData or a lossurf.data.Dataset (or a DataLoader / "
            f"list of (x, y) batches), got a {type(data).__name__} of tensors; pass [(x, y)] "
            "or EvalData(x=..., y=..., task=...)"
        )
    xs, ys = [], []
    for i, batch in enumerate(_iterate(data, what)):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            kind = f"a {len(batch)}-tuple" if isinstance(batch, (tuple, list)) else \
                f"a {type(batch).__name__}"
            raise LossurfError(
                f"{what}: batch {i} is {kind}, not an (x, y) pair; make the loader yield "
                "(inputs, targets) (a collate_fn can)"
            )
        x, y = _tensor(batch[0], f"{what}: batch {i} inputs"), _tensor(batch[1], f"{what}: batch {i} targets")
        if len(x) != len(y):
            raise LossurfError(
                f"{what}: batch {i} has {len(x)} inputs and {len(y)} targets; pass as many of each"
            )
        if xs and (x.shape[1:] != xs[0].shape[1:] or y.shape[1:] != ys[0].shape[1:]):
            raise LossurfError(
                f"{what}: batch {i} has examples of shape {tuple(x.shape[1:])} -> "
                f"{tuple(y.shape[1:])}, batch 0 {tuple(xs[0].shape[1:])} -> "
                f"{tuple(ys[0].shape[1:])}; every batch needs the same example shape"
            )
        xs.append(x)
        ys.append(y)
    if not xs:
        raise LossurfError(f"{what} yielded no batches; pass a non-empty loader")
    return xs, ys


def read_inputs(data: Any, what: str = "bn_data") -> torch.Tensor:
    """All inputs of a tensor, a re-iterable of ``(x, y)`` batches (or of input tensors)."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return _tensor(data, what)
    if not is_batches(data):
        raise LossurfError(
            f"{what} is a {type(data).__name__}; pass a DataLoader, a list of (x, y) batches or "
            "a tensor of training inputs"
        )
    xs = []
    for i, batch in enumerate(_iterate(data, what)):
        x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        x = _tensor(x, f"{what}: batch {i} inputs")
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise LossurfError(f"{what}: batch {i} has inputs of shape {tuple(x.shape[1:])}, "
                               f"batch 0 {tuple(xs[0].shape[1:])}; use one input shape")
        xs.append(x)
    if not xs:
        raise LossurfError(f"{what} yielded no batches; pass a non-empty loader")
    return torch.cat(xs)


def infer_task(x: torch.Tensor, y: torch.Tensor) -> str:
    """The task the targets imply (see the module docstring)."""
    if y.is_floating_point():
        return "regression"
    if y.dim() == 2 and not x.is_floating_point() and x.shape == y.shape:
        return "language_model"
    if y.dim() == 1:
        return "classification"
    raise LossurfError(
        f"cannot tell the task of integer targets of shape {tuple(y.shape)} with inputs "
        f"{tuple(x.shape)}; build the data with lossurf.surface.batches.from_batches(data, "
        "task=...) or EvalData(x, y, task=...)"
    )


def from_batches(data: Any, *, task: str | None = None, bn_data: Any = None,
                 subset: int | None = None, seed: int = 0, bn_examples: int = 1024,
                 what: str = "data") -> Any:
    """Read a DataLoader (or re-iterable of ``(x, y)`` batches) once into an ``EvalData``.

    Args:
        data: the batches to evaluate on.
        task: ``classification``, ``language_model`` or ``regression`` (default: inferred).
        bn_data: where batch-norm statistics come from (default: ``data``'s own inputs).
        subset: keep a fixed, seeded subset of this many examples (default all).
        seed: seed of the subsets (default 0).
        bn_examples: inputs kept for BN statistics, a fixed seeded subset (default 1024).
        what: the argument's name, for messages.

    Returns:
        The :class:`~lossurf.surface.evaluate.EvalData`.
    """
    from lossurf.surface.evaluate import EvalData

    xs, ys = _pairs(data, what)
    x, y = torch.cat(xs), torch.cat(ys)
    idx = seeded_subset(len(x), subset, seed)
    bn_source = x if bn_data is None else read_inputs(bn_data)
    if bn_source.shape[1:] != x.shape[1:]:
        raise LossurfError(
            f"bn_data inputs have shape {tuple(bn_source.shape[1:])}, {what}'s "
            f"{tuple(x.shape[1:])}; pass training inputs of the model's input shape"
        )
    bn_x = bn_source[seeded_subset(len(bn_source), bn_examples, seed)] if bn_examples > 0 else None
    return EvalData(x[idx], y[idx], task or infer_task(x, y), bn_x)
