"""One training run, epoch by epoch, with no file I/O.

The protocol of the paper (section 4.1): every run of a seed starts from the same
initialization and sees the same minibatches in the same order. The order of an epoch is
derived from the seed and the epoch alone (:func:`epoch_order`), never from a shared RNG stream,
so runs can be trained in any order, on any worker, and resumed at any epoch boundary with
bitwise-identical results. Augmentation and dropout draw from generators seeded the same way.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from lossurf import objective
from lossurf.config import RunSpec
from lossurf.data.base import Dataset

__all__ = [
    "derive_seed",
    "epoch_order",
    "order_hash",
    "switch_epoch",
    "phase_at",
    "with_data_statistics",
    "build_optimizer",
    "EpochStats",
    "train_epoch",
    "evaluate_split",
    "distance",
]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (stable across processes and machines)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of ``n`` training examples for ``epoch`` (1-based) of ``seed``."""
    generator = torch.Generator().manual_seed(derive_seed("order", seed, epoch))
    return torch.randperm(n, generator=generator)


def order_hash(order: torch.Tensor) -> str:
    """A short content hash of an epoch's order, recorded so runs can prove they shared it."""
    return hashlib.sha256(order.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def switch_epoch(at: float, epochs: int) -> int:
    """The last epoch of method A in a switch at fraction ``at`` of ``epochs`` epochs.

    "The first p % of the epochs" rounded half up, ``floor(at * epochs + 0.5)``, the same for
    every ``at`` (Python's ``round`` rounds halves to even, so 25 % of 10 epochs was 2 while
    75 % of 10 was 8), and at least one epoch of each method: between 1 and ``epochs - 1``
    (1 for a single epoch). 25 % of 10 epochs is 3 (2.5 rounds up), 50 % of 200 is 100.
    """
    if epochs <= 1:
        return 1
    # the epsilon keeps 0.29 * 50 (14.499999999999998 in floating point, 14.5 exactly) at 15
    return min(max(math.floor(at * epochs + 0.5 + 1e-9), 1), epochs - 1)


def phase_at(run: RunSpec, epoch: int, epochs: int) -> int:
    """Which optimizer is active in ``epoch`` (1-based): 0 for the run's own, 1 after a switch.

    A switch at fraction ``at`` hands over after :func:`switch_epoch` epochs, e.g. ``at=0.5``
    of 200 epochs: method A for epochs 1-100.
    """
    if run.switch is None:
        return 0
    return 0 if epoch <= switch_epoch(run.switch.at, epochs) else 1


def build_optimizer(run: RunSpec, phase: int, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of ``phase`` (0: the run's own, 1: the one it switches to).

    A switch starts method B with fresh state: A's moments mean nothing to B.
    """
    from lossurf import optim  # late import keeps train importable on its own

    if phase == 0:
        return optim.build(run.optimizer, params, lr=run.lr, **run.options)
    assert run.switch is not None
    return optim.build(run.switch.to, params, lr=run.switch.lr, **run.switch.options)


@dataclass
class EpochStats:
    """What one epoch of training produced."""

    mean_batch_loss: float
    gradient_evaluations: int
    diverged: bool


def _batches(
    order: torch.Tensor, batch_size: int
) -> Iterator[torch.Tensor]:
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    order: torch.Tensor,
    batch_size: int,
    *,
    augment_seed: int,
    device: torch.device,
    on_batch: Callable[[float], None] | None = None,
) -> EpochStats:
    """Train one epoch over ``order``; stop early and report divergence on a non-finite loss.

    Optimizers that evaluate several gradients per step (Runge-Kutta) call the closure once per
    stage. With ``minibatch == "next"`` each stage consumes its own minibatch, so an epoch costs
    as many gradient evaluations as the base method.
    """
    model.train()
    generator = torch.Generator().manual_seed(augment_seed)
    next_batch_per_stage = getattr(optimizer, "minibatch", "same") == "next"
    train_x, train_y = data.train_x, data.train_y
    batches = _batches(order, batch_size)
    evaluations = 0
    loss_total = 0.0
    steps = 0

    def fetch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = train_x[index]
        if data.augment is not None:
            x = data.augment(x, generator)
        return x.to(device, non_blocking=True), train_y[index].to(device, non_blocking=True)

    for index in batches:
        stage = 0
        current = fetch(index)

        def closure() -> torch.Tensor:
            nonlocal stage, current, evaluations
            if stage > 0 and next_batch_per_stage:
                following = next(batches, None)
                if following is not None:
                    current = fetch(following)
            stage += 1
            evaluations += 1
            optimizer.zero_grad(set_to_none=True)
            x, y = current
            loss = objective.mean_loss(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        value = float(loss.detach())
        steps += 1
        if not math.isfinite(value):
            return EpochStats(value, evaluations, diverged=True)
        loss_total += value
        if on_batch is not None:
            on_batch(value)
    return EpochStats(loss_total / max(steps, 1), evaluations, diverged=False)


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) over ``(x, y)``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        batch_loss, batch_correct, n = objective.loss_and_correct(model(xb), yb)
        loss_sum += batch_loss.double()
        correct += batch_correct
        count += n
    model.train(was_training)
    return float(loss_sum) / max(count, 1), float(correct) / max(count, 1)


@torch.no_grad()
def with_data_statistics(model: nn.Module, x: torch.Tensor, *, batch_size: int,
                         device: torch.device) -> nn.Module:
    """A copy of ``model`` whose batch-norm running statistics are estimated from ``x``.

    The epoch-0 row of a batch-norm network is evaluated with this copy: at the
    initialization the running statistics are the defaults (mean 0, variance 1), which say
    nothing about the data, so an exotic initialization such as N(-10, 0.01) logs an absurd
    loss (1e6 where the network with the statistics of its data has 2.45). Statistics are the
    cumulative average over ``x`` in fixed batches (BN layers alone in train mode, dropout
    off), as the surface evaluator's ``recompute`` policy. ``model`` itself is not touched, so
    the saved initialization stays as it was. A model without batch norm is returned as is.
    """
    import copy

    from lossurf.surface.batchnorm import batchnorm_modules, begin_recompute, end_recompute

    if not batchnorm_modules(model):
        return model
    clone = copy.deepcopy(model).eval()
    bns = batchnorm_modules(clone)
    begin_recompute(bns)
    for start in range(0, len(x), batch_size):
        clone(x[start : start + batch_size].to(device))
    end_recompute(bns)
    return clone


@torch.no_grad()
def distance(model: nn.Module, reference: dict[str, torch.Tensor]) -> float:
    """Euclidean distance ‖θ − θ_ref‖ over the model's parameters (buffers excluded)."""
    total = torch.zeros((), dtype=torch.float64)
    for name, parameter in model.named_parameters():
        diff = parameter.detach().double().cpu() - reference[name].double()
        total += diff.pow(2).sum()
    return math.sqrt(float(total))
