"""The training objective and its metrics, shared by the training loop and the evaluators.

Classification: cross-entropy over ``[N, C]`` logits. Language models: token cross-entropy over
``[N, T, V]`` logits and ``[N, T]`` targets, so loss is per token and perplexity is ``exp(loss)``.

A user's loss (the surface API's ``loss_fn=``) is a callable ``loss_fn(outputs, targets)`` that
returns the MEAN loss over the batch's examples as a scalar tensor, as torch's losses do with
``reduction="mean"`` (``F.mse_loss``, ``nn.CrossEntropyLoss()``). The evaluators weight each
batch by its number of examples (:func:`user_loss_sum`), so the loss over uneven batches is
exactly the mean over all examples. Language-model outputs reach it unflattened,
``[B, T, V]`` with ``[B, T]`` targets.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from lossurf.errors import LossurfError

__all__ = ["Task", "LossFn", "mean_loss", "loss_and_correct", "perplexity", "user_loss", "user_loss_sum",
           "loss_label", "check_class_ids"]

Task = Literal["classification", "language_model"]
#: ``loss_fn(outputs, targets) -> mean loss over the batch's examples`` (a scalar tensor).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _flatten(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Language models predict every position: fold time into the batch.
    if logits.dim() == 3:
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return logits, targets


def check_class_ids(targets: torch.Tensor, outputs: torch.Tensor | int) -> None:
    """Refuse class or token ids the cross-entropy cannot take: outside ``0..C-1`` for a model
    with ``C`` outputs (torch raises an IndexError deep inside, or silently skips ``-100``).

    Call it once per data set, not per batch: ``targets`` may be all of them, ``outputs`` the
    logits of any batch (or their number ``C``).

    Raises:
        LossurfError: an id is negative or at least ``C``; names the range found and ``C``.
    """
    if isinstance(outputs, torch.Tensor):
        if outputs.dim() < 2:
            return  # not logits over classes; cross-entropy says what is wrong
        outputs = outputs.shape[-1]
    if targets.numel() == 0 or targets.is_floating_point():
        return
    low, high = int(targets.min()), int(targets.max())
    if low >= 0 and high < outputs:
        return
    fix = f"relabel the targets to 0..{outputs - 1}"
    if low >= 0:
        fix += f", or give the model's last layer {high + 1} outputs"
    raise LossurfError(f"the targets hold class ids {low} to {high}, but the model has {outputs} "
                       f"outputs (class ids 0 to {outputs - 1}); {fix}")


def mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over examples (classification) or tokens (language models)."""
    logits, targets = _flatten(logits, targets)
    return F.cross_entropy(logits, targets)


def loss_and_correct(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed cross-entropy, number of correct predictions, and number of predictions.

    Sums (not means) so that batches of different sizes add up exactly.
    """
    logits, targets = _flatten(logits, targets)
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.argmax(dim=-1) == targets).sum()
    return loss_sum, correct, targets.numel()


def perplexity(loss: float) -> float:
    """``exp(loss)`` for a mean token cross-entropy, ``inf`` where it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def user_loss(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss_fn(outputs, targets)``, checked: a scalar tensor, still attached to its graph
    (training differentiates it).

    Raises:
        LossurfError: ``loss_fn`` raised, or returned something other than a scalar tensor.
    """
    try:
        value = loss_fn(outputs, targets)
    except LossurfError:
        raise
    except Exception as error:
        raise LossurfError(
            f"loss_fn raised {type(error).__name__}: {error} on outputs of shape "
            f"{tuple(outputs.shape)} and targets of shape {tuple(targets.shape)}; fix loss_fn"
        ) from None
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise LossurfError(
            f"loss_fn must return the batch's mean loss as a scalar tensor, got {got}; "
            "reduce it with .mean() (reduction='mean')"
        )
    return value.reshape(())


def user_loss_sum(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss_fn``'s batch mean times the batch's number of examples, in float64: summed over
    batches and divided by the number of examples, this is the mean over all of them.

    Raises:
        LossurfError: ``loss_fn`` raised, or returned something other than a scalar.
    """
    return user_loss(loss_fn, outputs, targets).detach().to(torch.float64) * len(targets)


def loss_label(loss_fn: LossFn | None) -> str:
    """A name for a loss in a surface's provenance: ``cross_entropy`` or the callable's
    qualified name."""
    if loss_fn is None:
        return "cross_entropy"
    fn = getattr(loss_fn, "func", loss_fn)  # functools.partial
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{name}" if module else name
