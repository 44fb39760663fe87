"""The in-memory data set every loader returns, and the helpers loaders share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

__all__ = ["Dataset", "Augment", "seeded_subset"]

#: ``augment(x, generator) -> x``: a random, per-batch transform of training inputs. It must
#: draw all its randomness from ``generator`` so every run of a seed sees identical batches.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors with a fixed split.

    Classification: ``train_x`` is ``[N, C, H, W]`` (or ``[N, D]``) float32, ``train_y`` is
    ``[N]`` int64. Language model: ``train_x`` and ``train_y`` are ``[N, bptt]`` int64 token
    ids, ``train_y`` being ``train_x`` shifted by one token; ``num_classes`` is the vocabulary
    size and ``vocab`` lists the words.
    """

    name: str
    task: Literal["classification", "language_model"]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: Augment | None = None
    vocab: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch dimension)."""
        return tuple(self.train_x.shape[1:])

    def model_options(self) -> dict:
        """What a model needs to know about this data: classes, channels or vocabulary size."""
        if self.task == "language_model":
            return {"vocab_size": self.num_classes}
        options = {"num_classes": self.num_classes}
        if self.train_x.dim() == 4:
            options["in_channels"] = int(self.train_x.shape[1])
        else:
            options["in_features"] = int(self.train_x[0].numel())
        return options


def seeded_subset(n: int, k: int | None, seed: int) -> torch.Tensor:
    """Indices of a fixed random subset of ``k`` out of ``n`` items (all of them, in order, if
    ``k`` is None or at least ``n``)."""
    if k is None or k >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:k].sort().values
