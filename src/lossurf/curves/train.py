"""Fitting a curve's bend: minimize the loss averaged along the curve (no file I/O).

Garipov et al. (2018) train the bend ``theta`` of a curve ``phi_theta(t)`` between fixed end
points by minimizing ``E_{t ~ U(0, 1)} L(phi_theta(t))`` with a stochastic optimizer: every
minibatch draws one ``t`` and takes a gradient step on the loss of the network at
``phi_theta(t)``. The network runs in train mode there, so batch norm uses the minibatch's own
statistics (running statistics are recomputed per ``t`` when the curve is evaluated).

Everything random is derived from ``(seed, epoch)`` alone, as in :mod:`lossurf.train`: the
minibatch order is :func:`lossurf.train.epoch_order`, the ``t`` of each minibatch and the
dropout masks come from generators seeded by :func:`lossurf.train.derive_seed`. An epoch can
therefore be replayed, and a fit resumed from its state after any epoch ends bitwise equal to
one that never stopped (on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from lossurf import objective
from lossurf.curves.bezier import check_kind, curve_coefficients
from lossurf.devices import api_device
from lossurf.errors import LossurfError
from lossurf.objective import LossFn
from lossurf.params import StateDict, as_state, check_compatible, check_finite_weights
from lossurf.train import derive_seed, epoch_order

__all__ = ["TrainData", "CurveTrainer", "train_data"]


@dataclass(frozen=True)
class TrainData:
    """Training examples for a curve: inputs, targets and an optional augmentation."""

    x: torch.Tensor
    y: torch.Tensor
    augment: Any = None


def train_data(data: Any) -> TrainData:
    """Training examples from a :class:`lossurf.data.Dataset` (its training split, with its
    augmentation), an ``EvalData`` or a tuple ``(x, y)`` of tensors."""
    from lossurf.data.base import Dataset
    from lossurf.surface.evaluate import EvalData

    if isinstance(data, Dataset):
        return TrainData(data.train_x, data.train_y, data.augment)
    if isinstance(data, EvalData):
        return TrainData(data.x, data.y)
    if (isinstance(data, tuple) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        if len(data[0]) != len(data[1]) or len(data[0]) == 0:
            raise LossurfError(f"curve training data has {len(data[0])} inputs and "
                               f"{len(data[1])} targets; pass the same, non-zero number of each")
        return TrainData(data[0], data[1])
    raise LossurfError(
        f"curve training data must be a lossurf Dataset, an EvalData or a tuple (x, y) of "
        f"tensors, got {type(data).__name__}"
    )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LossurfError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class CurveTrainer:
    """The bend of one curve and its optimizer, trained one epoch at a time.

    Args:
        model: the architecture (never modified: an internal copy is trained through).
        start, end: the fixed end points' state dicts.
        data: training examples (see :func:`train_data`).
        kind: ``bezier`` or ``chain``.
        lr: the optimizer's learning rate.
        batch_size: examples per minibatch (one ``t`` per minibatch).
        seed: the seed of minibatch orders, ``t`` draws and dropout.
        optimizer: a name of :mod:`lossurf.optim` (default ``sgdm``, momentum 0.9, as Garipov
            et al.), with ``optimizer_options`` for it.
        loss_fn: ``loss_fn(outputs, targets)``, the batch's mean loss (default cross-entropy).
        device: where to train (default CPU).
        bend: the bend to start from (default the midpoint ``(start + end) / 2``).
    """

    def __init__(self, model: nn.Module, start: StateDict | nn.Module, end: StateDict | nn.Module,
                 data: Any, *, kind: str = "bezier", lr: float = 0.05, batch_size: int = 64,
                 seed: int = 0, optimizer: str = "sgdm", optimizer_options: Mapping | None = None,
                 loss_fn: LossFn | None = None, device: Any = None,
                 bend: StateDict | None = None) -> None:
        from lossurf import optim

        self.kind = check_kind(kind)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.seed, self.loss_fn = int(seed), loss_fn
        self.device = api_device(device) or torch.device("cpu")
        start, end = as_state(start), as_state(end)
        check_compatible([as_state(model), start, end], ["the model", "start", "end"])
        check_finite_weights(start, "start")
        check_finite_weights(end, "end")
        if bend is not None:
            check_finite_weights(bend, "the bend")
        if loss_fn is not None and not callable(loss_fn):
            raise LossurfError(f"loss_fn is a {type(loss_fn).__name__}, not a callable; pass a "
                               "function (outputs, targets) -> mean loss")
        self.data = train_data(data)
        if loss_fn is None and self.data.y.is_floating_point():
            raise LossurfError("regression data (floating-point targets) need a loss: pass "
                               "loss_fn=, e.g. torch.nn.functional.mse_loss")
        self.work = _copy(model, self.device)
        self.keys = [k for k, p in self.work.named_parameters() if p.is_floating_point()]
        self.start = {k: start[k].to(self.device, torch.float32).detach() for k in self.keys}
        self.end = {k: end[k].to(self.device, torch.float32).detach() for k in self.keys}
        # buffers the bend carries for evaluation (BN statistics: midpoint; integers: start's)
        self._buffers = {k: (0.5 * (start[k].double() + end[k].double())).to(start[k].dtype)
                         if start[k].is_floating_point() else start[k].clone()
                         for k in start if k not in self.keys}
        if loss_fn is None:  # the ids against the number of outputs, once (one example)
            self._check_ids()
        initial = bend if bend is not None else {
            k: 0.5 * (self.start[k] + self.end[k]) for k in self.keys}
        self.bend = {k: nn.Parameter(initial[k].detach().to(self.device, torch.float32).clone())
                     for k in self.keys}
        self.optimizer = optim.build(optimizer, list(self.bend.values()), lr=lr,
                                     **dict(optimizer_options or {}))

    def _check_ids(self) -> None:
        was_training = self.work.training
        self.work.eval()  # one example: batch norm on running statistics
        try:
            with torch.no_grad():
                out = functional_call(self.work, self.start, (self.data.x[:1].to(self.device),))
        finally:
            self.work.train(was_training)
        if isinstance(out, (tuple, list)):
            out = out[0]
        objective.check_class_ids(self.data.y, out)

    def coefficients(self, epoch: int, batches: int) -> np.ndarray:
        """The ``[batches, 3]`` curve coefficients of an epoch's minibatches (seeded t)."""
        generator = torch.Generator().manual_seed(derive_seed("curve-t", self.seed, epoch))
        t = torch.rand(batches, generator=generator, dtype=torch.float64).numpy()
        return curve_coefficients(self.kind, t)

    def _loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.work, params, (x,))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if self.loss_fn is None:
            return objective.mean_loss(out, y)
        loss = objective.user_loss(self.loss_fn, out, y)
        if not loss.requires_grad:
            raise LossurfError("loss_fn's result has no gradient (it does not depend on the "
                               "outputs through torch operations); compute it from outputs "
                               "with torch functions, without .item() or .detach()")
        return loss

    def train_epoch(self, epoch: int) -> float:
        """Train the bend over one epoch (1-based); returns the mean minibatch loss.

        Raises:
            LossurfError: the loss became NaN or infinite (lower the learning rate).
        """
        n = len(self.data.x)
        order = epoch_order(self.seed, epoch, n)
        starts = list(range(0, n, self.batch_size))
        coefs = self.coefficients(epoch, len(starts))
        augment = torch.Generator().manual_seed(derive_seed("curve-augment", self.seed, epoch))
        self.work.train()
        total = 0.0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(derive_seed("curve-dropout", self.seed, epoch))
            for (c0, c1, c2), first in zip(coefs.tolist(), starts):
                index = order[first:first + self.batch_size]
                x = self.data.x[index]
                if self.data.augment is not None:
                    x = self.data.augment(x, augment)
                x, y = x.to(self.device), self.data.y[index].to(self.device)
                params = {k: c0 * self.start[k] + c1 * self.bend[k] + c2 * self.end[k]
                          for k in self.keys}
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._loss(params, x, y)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise LossurfError(
                        f"curve training diverged in epoch {epoch} (loss {value}); lower the "
                        "learning rate (--lr)"
                    )
                loss.backward()
                self.optimizer.step()
                total += value
        return total / len(starts)

    def bend_state(self) -> dict[str, torch.Tensor]:
        """The bend as a full state dict of the architecture (CPU tensors, model key order)."""
        out = {}
        for k in self.work.state_dict():
            source = self.bend[k].detach() if k in self.bend else self._buffers[k]
            out[k] = source.cpu().clone()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed fit needs: the bend's tensors and the optimizer's state."""
        return {"bend": {k: v.detach().cpu().clone() for k, v in self.bend.items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (raises ``KeyError``/``ValueError`` if it does
        not fit this curve: the caller names the file)."""
        bend = state["bend"]
        if set(bend) != set(self.keys):
            raise ValueError("its bend has other tensors than this model's parameters")
        with torch.no_grad():
            for k in self.keys:
                if bend[k].shape != self.bend[k].shape:
                    raise ValueError(f"its bend's {k} has shape {tuple(bend[k].shape)}")
                self.bend[k].copy_(bend[k])
        self.optimizer.load_state_dict(state["optimizer"])


def _copy(model: nn.Module, device: torch.device) -> nn.Module:
    import copy

    work = copy.deepcopy(model).to(device)
    for p in work.parameters():
        p.requires_grad_(False)
    return work
