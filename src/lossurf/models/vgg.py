"""VGG with batch norm and dropout for 32x32 images, as cifar.torch ``models/vgg_bn_drop.lua``."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.models.nin import ConvBlock, check_positive, scaled

__all__ = ["VGG", "VGG_LAYOUT"]

#: ``(channels, dropout)`` per conv block, ``"M"`` for a 2x2 max pool (ceil mode). The
#: dropout rates are cifar.torch's, later multiplied by the ``dropout`` option.
VGG_LAYOUT: list[tuple[int, float] | str] = [
    (64, 0.3), (64, 0.0), "M",
    (128, 0.4), (128, 0.0), "M",
    (256, 0.4), (256, 0.4), (256, 0.0), "M",
    (512, 0.4), (512, 0.4), (512, 0.0), "M",
    (512, 0.4), (512, 0.4), (512, 0.0), "M",
]  # fmt: skip

#: Dropout rate before each linear layer of the classifier (before the ``dropout`` scale).
CLASSIFIER_DROPOUT = 0.5


class VGG(nn.Module):
    """VGG-16-style network of cifar.torch ``vgg_bn_drop.lua`` (the paper's VGG).

    Thirteen 3x3 ``conv → BatchNorm → ReLU`` blocks in five stages, each stage closed by a
    2x2 max pool; dropout 0.3/0.4 inside stages as in :data:`VGG_LAYOUT`; then the classifier
    ``dropout .5 → Linear(512, 512) → BatchNorm1d → ReLU → dropout .5 → Linear(512, classes)``.
    Five pools take 32x32 to 1x1 (ceil mode keeps smaller inputs such as 8x8 at 1x1 too).

    Without batch norm the convolutions and the first linear layer carry biases; with it they
    do not (BatchNorm's shift replaces them). Convolutions start from cifar.torch's "MSR"
    init N(0, sqrt(2 / (k*k*out_channels))) with zero bias; linear layers and BatchNorm keep
    PyTorch's init.

    Args:
        num_classes: output classes (default 10).
        in_channels: input channels (default 3).
        batch_norm: BatchNorm after every conv and the hidden linear layer (default True).
        dropout: scale of every dropout rate (default 1.0 = cifar.torch; 0 disables all;
            must keep the largest rate, ``0.5 * dropout``, below 1).
        width: channel multiplier for convs and the hidden linear layer (default 1.0).

    State-dict keys read ``features.conv1_1.conv.weight``, ``classifier.fc1.weight``...
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: bool = True,
        dropout: float = 1.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive("vgg", num_classes=num_classes, in_channels=in_channels, width=width)
        if not 0.0 <= dropout * CLASSIFIER_DROPOUT < 1.0:
            raise LossurfError(
                f"model 'vgg': option 'dropout' scales cifar.torch's rates (0.3-0.5) and must "
                f"lie in [0, 2), got {dropout!r}; use 1 for the paper's rates, 0 to disable"
            )
        layers: list[tuple[str, nn.Module]] = []
        channels, stage, index = in_channels, 1, 1
        for item in VGG_LAYOUT:
            if item == "M":
                layers.append((f"pool{stage}", nn.MaxPool2d(2, 2, ceil_mode=True)))
                stage, index = stage + 1, 1
                continue
            out, rate = item
            out = scaled(out, width)
            name = f"conv{stage}_{index}"
            layers.append((name, ConvBlock(channels, out, 3, padding=1, batch_norm=batch_norm)))
            if rate * dropout > 0:
                layers.append((f"drop{stage}_{index}", nn.Dropout(rate * dropout)))
            channels, index = out, index + 1
        self.features = nn.Sequential(OrderedDict(layers))

        hidden = scaled(512, width)
        p = CLASSIFIER_DROPOUT * dropout
        head: list[tuple[str, nn.Module]] = [
            ("drop1", nn.Dropout(p)),
            ("fc1", nn.Linear(channels, hidden, bias=not batch_norm)),
            ("bn1", nn.BatchNorm1d(hidden) if batch_norm else None),
            ("relu1", nn.ReLU()),
            ("drop2", nn.Dropout(p)),
            ("fc2", nn.Linear(hidden, num_classes)),
        ]
        self.classifier = nn.Sequential(
            OrderedDict(
                (n, m)
                for n, m in head
                if m is not None and not (isinstance(m, nn.Dropout) and p == 0)
            )
        )
        self._msr_init()

    @torch.no_grad()
    def _msr_init(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                k_h, k_w = module.kernel_size
                module.weight.normal_(0.0, math.sqrt(2.0 / (k_h * k_w * module.out_channels)))
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, in_channels, 32, 32]`` (or smaller)."""
        return self.classifier(torch.flatten(self.features(x), 1))
