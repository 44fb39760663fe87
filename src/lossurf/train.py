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
    "phase_at",
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


def phase_at(run: RunSpec, epoch: int, epochs: int) -> int:
    """Which optimizer is active in ``epoch`` (1-based): 0 for the run's own, 1 after a switch.

    A switch at fraction ``at`` hands over after ``round(at * epochs)`` epochs (at least one
    epoch of each method), e.g. ``at=0.5`` of 200 epochs: method A for epochs 1-100.
    """
    if run.switch is None:
        return 0
    boundary = min(max(round(run.switch.at * epochs), 1), epochs - 1) if epochs > 1 else 1
    return 0 if epoch <= boundary else 1


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
def distance(model: nn.Module, reference: dict[str, torch.Tensor]) -> float:
    """Euclidean distance ‖θ − θ_ref‖ over the model's parameters (buffers excluded)."""
    total = torch.zeros((), dtype=torch.float64)
    for name, parameter in model.named_parameters():
        diff = parameter.detach().double().cpu() - reference[name].double()
        total += diff.pow(2).sum()
    return math.sqrt(float(total))
