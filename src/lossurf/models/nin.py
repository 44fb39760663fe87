"""Network-in-Network for 32x32 images, as in szagoruyko/cifar.torch ``models/nin.lua``.

Also holds the pieces every convolutional model here shares: :class:`ConvBlock`
(conv → optional BatchNorm → ReLU) and the option checks that turn a bad value into a
:class:`~lossurf.errors.LossurfError`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lossurf.errors import LossurfError

__all__ = ["NIN", "ConvBlock", "scaled", "check_positive", "check_probability"]

#: cifar.torch builds every SpatialBatchNormalization with eps 1e-3 (PyTorch's default is 1e-5).
BN_EPS = 1e-3


def check_positive(model: str, **values: float) -> None:
    """Raise :class:`LossurfError` unless every keyword value is > 0."""
    for name, value in values.items():
        if not value > 0:
            raise LossurfError(f"model {model!r}: option {name!r} must be > 0, got {value!r}")


def check_probability(model: str, name: str, value: float) -> None:
    """Raise :class:`LossurfError` unless ``0 <= value < 1`` (a dropout probability)."""
    if not 0.0 <= value < 1.0:
        raise LossurfError(
            f"model {model!r}: option {name!r} must be a dropout probability in [0, 1), "
            f"got {value!r}; use 0 to disable dropout"
        )


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (the ``width`` multiplier of every model)."""
    return max(1, int(round(channels * width)))


class ConvBlock(nn.Module):
    """``conv → BatchNorm2d → ReLU`` (or ``conv (with bias) → ReLU`` without batch norm).

    With batch norm the convolution has no bias: BatchNorm's shift makes it redundant, and a
    redundant direction would only add a flat valley to every loss surface we draw.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        padding: zero padding on each side (default 0).
        batch_norm: insert ``nn.BatchNorm2d`` (default True).
        bn_eps: BatchNorm epsilon (default 1e-3, as cifar.torch).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        batch_norm: bool = True,
        bn_eps: float = BN_EPS,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if batch_norm else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class NIN(nn.Module):
    """Network-in-Network (Lin et al. 2014) in the cifar.torch variant the paper trained.

    Layers (channels before ``width`` scaling)::

        conv1 192 5x5 p2, mlp1a 160 1x1, mlp1b 96 1x1, maxpool 3 s2 ceil, dropout
        conv2 192 5x5 p2, mlp2a 192 1x1, mlp2b 192 1x1, avgpool 3 s2 ceil, dropout
        conv3 192 3x3 p1, mlp3a 192 1x1, mlp3b num_classes 1x1, global avgpool, flatten

    Every convolution, the last one included, is followed by BatchNorm (eps 1e-3) and ReLU,
    exactly as in ``nin.lua`` (so the logits are non-negative). Convolution weights start from
    N(0, 0.05) and biases from 0, as ``nin.lua`` initializes them. The global average pool is
    adaptive, which equals cifar.torch's 8x8 average pool on 32x32 inputs.

    Args:
        num_classes: output classes (default 10).
        in_channels: input channels (default 3).
        batch_norm: BatchNorm after every convolution (default True).
        dropout: dropout probability after each pooling (default 0.5; 0 disables).
        width: channel multiplier (default 1.0).

    State-dict keys read ``features.conv1.conv.weight``, ``features.conv1.bn.running_mean``...
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: bool = True,
        dropout: float = 0.5,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive("nin", num_classes=num_classes, in_channels=in_channels, width=width)
        check_probability("nin", "dropout", dropout)
        c192, c160, c96 = scaled(192, width), scaled(160, width), scaled(96, width)

        def block(cin: int, cout: int, k: int, pad: int = 0) -> ConvBlock:
            return ConvBlock(cin, cout, k, padding=pad, batch_norm=batch_norm)

        layers: list[tuple[str, nn.Module]] = [
            ("conv1", block(in_channels, c192, 5, 2)),
            ("mlp1a", block(c192, c160, 1)),
            ("mlp1b", block(c160, c96, 1)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("drop1", nn.Dropout(dropout)),
            ("conv2", block(c96, c192, 5, 2)),
            ("mlp2a", block(c192, c192, 1)),
            ("mlp2b", block(c192, c192, 1)),
            ("pool2", nn.AvgPool2d(3, 2, ceil_mode=True)),
            ("drop2", nn.Dropout(dropout)),
            ("conv3", block(c192, c192, 3, 1)),
            ("mlp3a", block(c192, c192, 1)),
            ("mlp3b", block(c192, num_classes, 1)),
            ("pool3", nn.AdaptiveAvgPool2d(1)),
        ]
        # Dropout with p=0 is dropped, not kept as a no-op; keys are names, so none shifts.
        self.features = nn.Sequential(
            OrderedDict((n, m) for n, m in layers if not (n.startswith("drop") and dropout == 0))
        )
        self._init_like_cifar_torch()

    @torch.no_grad()
    def _init_like_cifar_torch(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, 0.05)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, in_channels, H, W]``."""
        return torch.flatten(self.features(x), 1)
