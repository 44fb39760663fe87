"""One training run, epoch by epoch, with no file I/O.

The protocol of the paper (section 4.1): every run of a seed starts from the same
initialization and sees the same minibatches in the same order. The order of an epoch is
derived from the seed and the epoch alone (:func:`epoch_order`), never from a shared RNG stream,
so runs can be trained in any order, on any worker, and resumed at any epoch boundary with
bitwise-identical results. Augmentation and dropout draw from generators seeded the same way.

On a GPU a step waits for nothing on the host: the data live on the device when they fit
(:mod:`lossurf.data.placement`), an epoch's order and augmentation parameters go there in one
copy each and the minibatches are gathered and augmented there (:func:`epoch_batches`), and
the batch losses are read once per epoch (:func:`train_epoch`).
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from lossurf import objective
from lossurf.config import RunSpec
from lossurf.data.base import Dataset, EpochAugment
from lossurf.data.placement import PlacedData, gather_batch, normalize_device, place
from lossurf.precision import check_precision, precision_context

__all__ = [
    "derive_seed",
    "epoch_order",
    "order_hash",
    "switch_epoch",
    "phase_at",
    "with_data_statistics",
    "build_optimizer",
    "EpochStats",
    "batch_sizes",
    "epoch_batches",
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
    """What one epoch of training produced.

    ``diverged``: a step's loss was not finite; ``mean_batch_loss`` is then that loss and
    ``gradient_evaluations`` counts the evaluations up to and including that step (the rest of
    the epoch ran, on non-finite weights, because losses are read once per epoch).
    """

    mean_batch_loss: float
    gradient_evaluations: int
    diverged: bool


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of an epoch's minibatches over ``n`` examples (the last may be smaller)."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def epoch_batches(
    data: Dataset,
    order: torch.Tensor,
    batch_size: int,
    *,
    augment_seed: int,
    device: torch.device | str,
    placed: PlacedData | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's minibatches ``(x, y)`` on ``device``, in ``order``.

    They depend only on ``order`` and ``augment_seed`` (the seed and the epoch): an
    :class:`~lossurf.data.base.EpochAugment` draws the whole epoch's parameters at once from
    a CPU generator seeded with ``augment_seed`` and applies them per batch on the device; a
    plain ``augment(x, generator)`` callable gets each host batch and the same generator. The
    order and the augmentation parameters go to the device once per epoch; with
    ``placed.train_resident`` the minibatches are gathered there, else on the host (into
    pinned memory) and copied per batch. ``placed`` defaults to :func:`place`'s (cached).
    """
    device = normalize_device(device)
    placed = placed if placed is not None else place(data, device)
    augment = data.augment
    generator = torch.Generator().manual_seed(augment_seed)
    sizes = batch_sizes(len(order), batch_size)
    params = None
    if isinstance(augment, EpochAugment):
        params = augment.draw(sizes, generator).to(device, non_blocking=True)
    train_x, train_y = placed.train_x, placed.train_y
    resident = placed.train_resident
    index_all = order.to(train_x.device, non_blocking=True)
    start = 0
    for size in sizes:
        index = index_all[start : start + size]
        if augment is not None and params is None:  # a user's callable: host batch, as always
            x = augment(train_x[index], generator).to(device, non_blocking=True)
            y = train_y[index].to(device, non_blocking=True)
        elif resident:
            x, y = train_x[index], train_y[index]
        else:
            x, y = gather_batch(train_x, index, device), gather_batch(train_y, index, device)
        if params is not None:
            x = augment.apply(x, params[start : start + size])
        start += size
        yield x, y


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
    placed: PlacedData | None = None,
    precision: str = "tf32",
) -> EpochStats:
    """Train one epoch over ``order`` (minibatches from :func:`epoch_batches`).

    Nothing in a step waits for the device: the batch losses stay there and are read once at
    the end of the epoch, where a non-finite one marks the epoch diverged (see
    :class:`EpochStats`); ``on_batch`` is then called with each step's loss, in order.
    ``precision`` (:mod:`lossurf.precision`) holds for the forward and backward passes:
    ``bf16`` autocasts the forward, the loss is taken in float32.

    Optimizers that evaluate several gradients per step (Runge-Kutta) call the closure once per
    stage. With ``minibatch == "next"`` each stage consumes its own minibatch, so an epoch costs
    as many gradient evaluations as the base method.
    """
    check_precision(precision)
    device = normalize_device(device)
    model.train()
    next_batch_per_stage = getattr(optimizer, "minibatch", "same") == "next"
    batches = epoch_batches(data, order, batch_size, augment_seed=augment_seed, device=device,
                            placed=placed)
    cast = precision == "bf16"
    evaluations = 0
    losses: list[torch.Tensor] = []
    evaluations_after: list[int] = []

    # TF32 flags for the whole epoch (backward included); bf16 casts only the forward.
    with precision_context("tf32" if precision == "tf32" else "fp32", device):
        for current in batches:
            stage = 0

            def closure() -> torch.Tensor:
                nonlocal stage, current, evaluations
                if stage > 0 and next_batch_per_stage:
                    following = next(batches, None)
                    if following is not None:
                        current = following
                stage += 1
                evaluations += 1
                optimizer.zero_grad(set_to_none=True)
                x, y = current
                with torch.autocast(device.type, dtype=torch.bfloat16) if cast else nullcontext():
                    outputs = model(x)
                loss = objective.mean_loss(outputs.float(), y)
                loss.backward()
                return loss

            losses.append(optimizer.step(closure).detach())
            evaluations_after.append(evaluations)
    if not losses:
        return EpochStats(0.0, evaluations, diverged=False)
    # The one read of the epoch (a host synchronisation on a GPU).
    values = torch.stack(losses).double().cpu().tolist()
    loss_total = 0.0
    for step, value in enumerate(values):
        if not math.isfinite(value):
            return EpochStats(value, evaluations_after[step], diverged=True)
        loss_total += value  # summed in order in float64, as the per-step reads were
        if on_batch is not None:
            on_batch(value)
    return EpochStats(loss_total / len(values), evaluations, diverged=False)


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) over ``(x, y)`` at ``precision``
    (the loss reduction stays in float32/float64)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with precision_context(precision, device):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            batch_loss, batch_correct, n = objective.loss_and_correct(model(xb).float(), yb)
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
