"""A user's own data set from an import path: ``data: {name: "mypkg.data:load", options: {...}}``.

The factory is called with ``spec.options`` as keyword arguments, plus ``data_dir``,
``split_seed`` and ``bptt`` where its signature names them. It runs with torch's and numpy's
global RNGs seeded with ``split_seed`` (and restored afterwards), so a factory that draws
random data or a random split returns the same data on every call. It returns either

- a :class:`lossurf.data.Dataset`, or
- a mapping with ``train_x``, ``train_y``, ``test_x``, ``test_y`` (tensors or numpy arrays)
  and optionally ``task`` (``classification``, the default, or ``language_model``),
  ``num_classes`` (default ``max label + 1``; the vocabulary size for a language model),
  ``vocab`` and ``meta``; or
- a tuple ``(train_x, train_y, test_x, test_y)`` (classification).

The result passes the checks every built-in set satisfies (see :func:`validate`), then
``max_train``/``max_test`` keep fixed subsets seeded by ``split_seed``, as for built-in sets.
``augment: true`` needs a returned ``Dataset`` whose ``augment`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lossurf.config import DataSpec
from lossurf.data.base import Dataset, seeded_subset
from lossurf.errors import LossurfError
from lossurf.imports import call_signature_filter, resolve_callable

__all__ = ["load_user", "from_output", "validate", "MAPPING_KEYS"]

#: Keys a factory's mapping may hold (the first four are required).
MAPPING_KEYS = ("train_x", "train_y", "test_x", "test_y", "task", "num_classes", "vocab", "meta")
_TASKS = ("classification", "language_model")


def load_user(spec: DataSpec) -> Dataset:
    """Call the factory ``spec.name`` names and return its validated, subset data set."""
    factory = resolve_callable(spec.name, "data factory")
    offered = {"data_dir": spec.data_dir, "split_seed": spec.split_seed, "bptt": spec.bptt}
    kwargs = dict(spec.options) | call_signature_filter(factory, offered)
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.split_seed)
            np.random.seed(spec.split_seed)
            out = factory(**kwargs)
    except LossurfError:
        raise
    except Exception as error:
        raise LossurfError(
            f"data factory {spec.name!r} raised {type(error).__name__}: {error}; "
            "fix the factory or its options (data: options:)"
        ) from None
    finally:
        np.random.set_state(numpy_state)
    dataset = from_output(out, spec.name)
    if spec.augment and dataset.augment is None:
        raise LossurfError(
            f"data factory {spec.name!r} gives no augmentation; set augment: false, or return "
            "a lossurf Dataset with augment=fn(x, generator)"
        )
    train = seeded_subset(len(dataset.train_x), spec.max_train, spec.split_seed)
    test = seeded_subset(len(dataset.test_x), spec.max_test, spec.split_seed)
    return Dataset(
        name=dataset.name, task=dataset.task,
        train_x=dataset.train_x[train], train_y=dataset.train_y[train],
        test_x=dataset.test_x[test], test_y=dataset.test_y[test],
        num_classes=dataset.num_classes,
        augment=dataset.augment if spec.augment else None,
        vocab=dataset.vocab, meta=dict(dataset.meta),
    )


def _tensor(value: Any, where: str, key: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise LossurfError(
            f"{where}: {key} is a {type(value).__name__}; return a torch tensor or numpy array"
        )
    return value.detach().cpu()


def from_output(out: Any, name: str) -> Dataset:
    """Turn what a data factory returned into a validated :class:`Dataset`.

    Floating-point inputs become float32 and integer targets int64, the dtypes of the
    built-in sets.

    Raises:
        LossurfError: a form other than those in the module docstring, or a failed check.
    """
    where = f"data factory {name!r}"
    if isinstance(out, Dataset):
        fields = {"train_x": out.train_x, "train_y": out.train_y, "test_x": out.test_x,
                  "test_y": out.test_y, "task": out.task, "num_classes": out.num_classes,
                  "vocab": out.vocab, "meta": out.meta}
        augment, label = out.augment, out.name
    elif isinstance(out, Mapping):
        unknown = sorted(str(k) for k in set(out) - set(MAPPING_KEYS))
        missing = [k for k in MAPPING_KEYS[:4] if k not in out]
        if unknown or missing:
            raise LossurfError(
                f"{where} returned a mapping with missing keys {missing} and unknown keys "
                f"{unknown}; use {list(MAPPING_KEYS[:4])} and optionally {list(MAPPING_KEYS[4:])}"
            )
        fields, augment, label = dict(out), None, name
    elif isinstance(out, (tuple, list)) and len(out) == 4:
        fields = dict(zip(MAPPING_KEYS[:4], out))
        augment, label = None, name
    else:
        raise LossurfError(
            f"{where} returned a {type(out).__name__}; return a lossurf Dataset, a mapping with "
            "train_x, train_y, test_x, test_y (and task, num_classes), or that 4-tuple"
        )
    tensors = {k: _tensor(fields[k], where, k) for k in MAPPING_KEYS[:4]}
    task = fields.get("task") or "classification"
    if task not in _TASKS:
        raise LossurfError(f"{where}: task {task!r} is not one of {list(_TASKS)}")
    for k in ("train_x", "test_x") if task == "classification" else ():
        if tensors[k].is_floating_point():
            tensors[k] = tensors[k].float()
    for k in MAPPING_KEYS[:4]:
        if not tensors[k].is_floating_point() and not tensors[k].is_complex() \
                and tensors[k].dtype != torch.bool:
            tensors[k] = tensors[k].long()
    num_classes = fields.get("num_classes")
    if num_classes is None:
        labels = [tensors["train_y"], tensors["test_y"]]
        if task == "language_model":
            labels += [tensors["train_x"], tensors["test_x"]]
        num_classes = _max_plus_one(labels, where)
    dataset = Dataset(
        name=label, task=task, num_classes=num_classes, augment=augment,
        vocab=fields.get("vocab"), meta=dict(fields.get("meta") or {}), **tensors,
    )
    validate(dataset, where)
    return dataset


def _max_plus_one(tensors: list[torch.Tensor], where: str) -> int:
    for t in tensors:
        if t.is_floating_point() or t.numel() == 0:  # validate() names the problem
            return 1
    return int(max(int(t.max()) for t in tensors)) + 1


def validate(dataset: Dataset, where: str = "data set") -> None:
    """Check what every built-in set guarantees: the task, dtypes, shapes, lengths, finite
    inputs and targets within ``[0, num_classes)``.

    Raises:
        LossurfError: the first failed check, naming the tensor and the fix.
    """
    if dataset.task not in _TASKS:
        raise LossurfError(f"{where}: task {dataset.task!r} is not one of {list(_TASKS)}")
    n = dataset.num_classes
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LossurfError(f"{where}: num_classes must be a positive integer, got {n!r}")
    for split in ("train", "test"):
        x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
        if x.dim() == 0 or y.dim() == 0 or len(x) == 0 or len(x) != len(y):
            raise LossurfError(
                f"{where}: {split}_x has shape {tuple(x.shape)} and {split}_y "
                f"{tuple(y.shape)}; give both the same, non-zero number of examples (dim 0)"
            )
        if y.dtype != torch.int64:
            raise LossurfError(
                f"{where}: {split}_y has dtype {y.dtype}; targets must be integer class ids"
                + (" or token ids" if dataset.task == "language_model" else "")
            )
        if dataset.task == "classification":
            if not x.is_floating_point() or x.dtype != torch.float32:
                raise LossurfError(
                    f"{where}: {split}_x has dtype {x.dtype}; classification inputs must be "
                    "floating point (float32)"
                )
            if y.dim() != 1:
                raise LossurfError(
                    f"{where}: {split}_y has shape {tuple(y.shape)}; classification targets "
                    "are one class id per example, shape [N]"
                )
            if not torch.isfinite(x).all():
                raise LossurfError(f"{where}: {split}_x contains NaN or Inf; clean the inputs")
        else:
            if x.dtype != torch.int64 or x.dim() != 2 or x.shape != y.shape:
                raise LossurfError(
                    f"{where}: a language model needs int64 token ids {split}_x and {split}_y "
                    f"of one shape [N, T]; got {split}_x {tuple(x.shape)} {x.dtype} and "
                    f"{split}_y {tuple(y.shape)}"
                )
            if int(x.min()) < 0 or int(x.max()) >= n:
                raise LossurfError(
                    f"{where}: {split}_x holds token ids outside [0, {n}); "
                    "num_classes is the vocabulary size"
                )
        if int(y.min()) < 0 or int(y.max()) >= n:
            raise LossurfError(
                f"{where}: {split}_y holds ids outside [0, {n}) (num_classes={n}); "
                "fix the labels or num_classes"
            )
    if dataset.train_x.shape[1:] != dataset.test_x.shape[1:]:
        raise LossurfError(
            f"{where}: train_x examples have shape {tuple(dataset.train_x.shape[1:])}, test_x "
            f"examples {tuple(dataset.test_x.shape[1:])}; give both splits the same shape"
        )
