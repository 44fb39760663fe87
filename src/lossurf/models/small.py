"""Small models for the embedded 8x8 digits (1 channel): a NIN, a VGG, a plain CNN and an MLP.

They mirror the paper's architectures at a size that trains 20 epochs of 1,437 digits in
seconds on two CPU cores. The convolutional ones end in an adaptive pool, so they also accept
larger images (e.g. 32x32 CIFAR for quick checks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.models.nin import ConvBlock, check_positive, check_probability, scaled

__all__ = ["NINSmall", "VGGSmall", "CNNSmall", "MLP"]


def _dropout(name: str, p: float) -> list[tuple[str, nn.Module]]:
    # p == 0 adds no module at all; layers are named, so the other keys do not move.
    return [(name, nn.Dropout(p))] if p > 0 else []


class NINSmall(nn.Module):
    """A two-stage Network-in-Network (~15k parameters at width 1, 10 classes).

    ``conv1 24 3x3 p1, mlp1a 24 1x1, mlp1b 24 1x1, maxpool 3 s2 ceil, dropout,
    conv2 48 3x3 p1, mlp2a 48 1x1, mlp2b num_classes 1x1, global avgpool``; every conv is a
    :class:`ConvBlock` (BatchNorm + ReLU), as in the full :class:`~lossurf.models.nin.NIN`.

    Args:
        num_classes: output classes (default 10).
        in_channels: input channels (default 1).
        batch_norm: BatchNorm after every convolution (default True).
        dropout: dropout probability after the pooling (default 0).
        width: channel multiplier (default 1.0).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        batch_norm: bool = True,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive("nin-small", num_classes=num_classes, in_channels=in_channels, width=width)
        check_probability("nin-small", "dropout", dropout)
        # 24/48 channels: the 8x8 stage dominates the cost, and this keeps 20 digits epochs
        # at a few CPU seconds while matching the larger nets' accuracy (~97%).
        c1, c2 = scaled(24, width), scaled(48, width)
        bn = batch_norm
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", ConvBlock(in_channels, c1, 3, padding=1, batch_norm=bn)),
                    ("mlp1a", ConvBlock(c1, c1, 1, batch_norm=bn)),
                    ("mlp1b", ConvBlock(c1, c1, 1, batch_norm=bn)),
                    ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
                    *_dropout("drop1", dropout),
                    ("conv2", ConvBlock(c1, c2, 3, padding=1, batch_norm=bn)),
                    ("mlp2a", ConvBlock(c2, c2, 1, batch_norm=bn)),
                    ("mlp2b", ConvBlock(c2, num_classes, 1, batch_norm=bn)),
                    ("pool2", nn.AdaptiveAvgPool2d(1)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, in_channels, H, W]``."""
        return torch.flatten(self.features(x), 1)


class VGGSmall(nn.Module):
    """3x3 conv stacks ``16-16-M-32-32-M`` and one linear layer (~18k parameters).

    The features are average-pooled to 2x2 (the identity on 8x8 inputs) and flattened into
    ``Linear(4 * 32, num_classes)``.

    Args:
        num_classes: output classes (default 10).
        in_channels: input channels (default 1).
        batch_norm: BatchNorm after every convolution (default True).
        dropout: dropout probability after each max pool (default 0).
        width: channel multiplier (default 1.0).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        batch_norm: bool = True,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive("vgg-small", num_classes=num_classes, in_channels=in_channels, width=width)
        check_probability("vgg-small", "dropout", dropout)
        c16, c32 = scaled(16, width), scaled(32, width)
        bn = batch_norm
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1_1", ConvBlock(in_channels, c16, 3, padding=1, batch_norm=bn)),
                    ("conv1_2", ConvBlock(c16, c16, 3, padding=1, batch_norm=bn)),
                    ("pool1", nn.MaxPool2d(2, 2, ceil_mode=True)),
                    *_dropout("drop1", dropout),
                    ("conv2_1", ConvBlock(c16, c32, 3, padding=1, batch_norm=bn)),
                    ("conv2_2", ConvBlock(c32, c32, 3, padding=1, batch_norm=bn)),
                    ("pool2", nn.MaxPool2d(2, 2, ceil_mode=True)),
                    *_dropout("drop2", dropout),
                    ("pool3", nn.AdaptiveAvgPool2d(2)),
                ]
            )
        )
        self.fc = nn.Linear(4 * c32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, in_channels, H, W]``, H, W >= 4."""
        return self.fc(torch.flatten(self.features(x), 1))


class CNNSmall(nn.Module):
    """Two 3x3 conv layers and a linear layer: the fastest model (~6k parameters).

    ``conv1 16 → maxpool 2 → conv2 32 → maxpool 2 → avgpool to 2x2 → Linear(128, classes)``.

    Args:
        num_classes: output classes (default 10).
        in_channels: input channels (default 1).
        batch_norm: BatchNorm after each convolution (default True).
        dropout: dropout probability before the linear layer (default 0).
        width: channel multiplier (default 1.0).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        batch_norm: bool = True,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive("cnn-small", num_classes=num_classes, in_channels=in_channels, width=width)
        check_probability("cnn-small", "dropout", dropout)
        c16, c32 = scaled(16, width), scaled(32, width)
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", ConvBlock(in_channels, c16, 3, padding=1, batch_norm=batch_norm)),
                    ("pool1", nn.MaxPool2d(2, 2, ceil_mode=True)),
                    ("conv2", ConvBlock(c16, c32, 3, padding=1, batch_norm=batch_norm)),
                    ("pool2", nn.MaxPool2d(2, 2, ceil_mode=True)),
                    ("pool3", nn.AdaptiveAvgPool2d(2)),
                    *_dropout("drop", dropout),
                ]
            )
        )
        self.fc = nn.Linear(4 * c32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, in_channels, H, W]``, H, W >= 4."""
        return self.fc(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """Fully connected ``Linear → [BatchNorm1d] → ReLU → [Dropout]`` layers and a linear output.

    The input is flattened first, so ``[N, 1, 8, 8]`` and ``[N, 64]`` both work.

    Args:
        num_classes: output classes (default 10).
        in_features: input size after flattening (default ``in_channels * 8 * 8``, the
            digits images).
        in_channels: channels of 8x8 image inputs, used only when ``in_features`` is not
            given (default 1).
        hidden: width of each hidden layer (default ``[64, 64]``; empty gives a linear model).
        batch_norm: BatchNorm1d after each hidden linear layer (default False).
        dropout: dropout probability after each hidden layer (default 0).

    State-dict keys read ``layers.fc1.weight``, ..., ``layers.out.bias``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_features: int | None = None,
        in_channels: int = 1,
        hidden: Sequence[int] = (64, 64),
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive("mlp", num_classes=num_classes, in_channels=in_channels)
        check_probability("mlp", "dropout", dropout)
        features = in_features if in_features is not None else in_channels * 64
        check_positive("mlp", in_features=features)
        if any(h < 1 for h in hidden):
            raise LossurfError(
                f"model 'mlp': option 'hidden' must list positive layer widths, got {list(hidden)}"
            )
        layers: list[tuple[str, nn.Module]] = []
        for i, size in enumerate(hidden, start=1):
            # As in ConvBlock: no bias in front of BatchNorm, whose shift replaces it.
            layers.append((f"fc{i}", nn.Linear(features, size, bias=not batch_norm)))
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm1d(size)))
            layers.append((f"relu{i}", nn.ReLU()))
            layers += _dropout(f"drop{i}", dropout)
            features = size
        layers.append(("out", nn.Linear(features, num_classes)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for inputs ``[N, ...]`` with ``in_features`` values each."""
        return self.layers(torch.flatten(x, 1))
