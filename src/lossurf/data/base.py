"""The in-memory data set every loader returns, and the helpers loaders share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["Dataset", "Augment", "EpochAugment", "seeded_subset"]

#: ``augment(x, generator) -> x``: a random, per-batch transform of training inputs. It must
#: draw all its randomness from ``generator`` so every run of a seed sees identical batches.
#: The training loop hands it the batch on the host (and moves the result to the device).
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@runtime_checkable
class EpochAugment(Protocol):
    """An augmentation whose random parameters are drawn for a whole epoch at once.

    The training loop calls :meth:`draw` once per epoch on the host generator, sends the
    parameters to the training device in one copy, and calls :meth:`apply` on every batch
    there, so a batch depends only on the seed and the epoch (never on the device or on where a
    run was resumed) and no host-to-device copy of random numbers happens per step. Calling
    the object as an :data:`Augment` (``augment(x, generator)``) gives the same batch as
    ``apply(x, draw([len(x)], generator))``.
    """

    def draw(self, sizes: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Parameters for batches of ``sizes`` examples, in order: ``[sum(sizes), k]``."""
        ...

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The augmented batch ``x`` (on any device) for its rows of :meth:`draw`'s result."""
        ...

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ...


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
