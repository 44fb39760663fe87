"""The training objective and its metrics, shared by the training loop and the evaluators.

Classification: cross-entropy over ``[N, C]`` logits. Language models: token cross-entropy over
``[N, T, V]`` logits and ``[N, T]`` targets, so loss is per token and perplexity is ``exp(loss)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["Task", "mean_loss", "loss_and_correct", "perplexity"]

Task = Literal["classification", "language_model"]


def _flatten(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Language models predict every position: fold time into the batch.
    if logits.dim() == 3:
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return logits, targets


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
