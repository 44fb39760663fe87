"""Batch-norm handling for the surface evaluator: the three policies, statistics re-estimation
and folding eval-mode batch norm into the preceding convolution or linear layer.

Policies (``BNPolicy``):

- ``recompute``: at each weight vector the running statistics are reset and re-estimated from
  fixed batches of training inputs with BN layers in train mode and ``momentum=None`` (PyTorch's
  cumulative average, i.e. the exact mean of the per-batch mean and unbiased variance), then the
  point is evaluated in eval mode. Dropout stays off during these passes too: only BN layers are
  put in train mode, so the statistics are deterministic.
- ``interpolate``: running statistics are combined with the same coefficients as the weights.
- ``batch``: each evaluation batch is normalised with its own statistics; nothing is updated.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "BNPolicy",
    "BN_POLICIES",
    "BN_STAT_NAMES",
    "batchnorm_modules",
    "is_bn_stat",
    "begin_recompute",
    "end_recompute",
    "use_batch_statistics",
    "fold_into",
    "StatsRecorder",
]

BNPolicy = Literal["recompute", "interpolate", "batch"]

#: Every policy, with a one-line description (used in error messages and docs).
BN_POLICIES: dict[str, str] = {
    "recompute": "re-estimate running statistics at each point from training batches (default)",
    "interpolate": "combine running statistics with the same coefficients as the weights",
    "batch": "normalise each evaluation batch with its own statistics",
}

BN_STAT_NAMES = ("running_mean", "running_var")


def batchnorm_modules(model: nn.Module) -> dict[str, _BatchNorm]:
    """The model's batch-norm layers by qualified name (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}


def is_bn_stat(key: str, bn_names: set[str] | dict) -> bool:
    """Whether state-dict ``key`` is a running mean or variance of one of the BN layers."""
    owner, _, leaf = key.rpartition(".")
    return leaf in BN_STAT_NAMES and owner in bn_names


def begin_recompute(bns: dict[str, _BatchNorm]) -> None:
    """Reset running statistics and switch BN layers (only them) to cumulative train mode."""
    for bn in bns.values():
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: the exact mean over the statistics batches
        bn.train(True)


def end_recompute(bns: dict[str, _BatchNorm]) -> None:
    """Back to eval mode after the statistics passes."""
    for bn in bns.values():
        bn.train(False)


def use_batch_statistics(bns: dict[str, _BatchNorm]) -> None:
    """Make BN layers (of an internal copy) normalise with batch statistics in eval mode too.

    Without running buffers ``nn.BatchNorm`` always uses the batch's statistics and updates
    nothing, which is the ``batch`` policy (and what the statistics recorder needs under vmap).
    """
    for bn in bns.values():
        bn.track_running_stats = False
        bn.running_mean = None
        bn.running_var = None
        bn.num_batches_tracked = None


def _fold_scale(bn: _BatchNorm, mean: torch.Tensor, var: torch.Tensor,
                weight: torch.Tensor | None, bias: torch.Tensor | None):
    scale = torch.rsqrt(var + bn.eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


@torch.no_grad()
def fold_into(
    layer_weight: torch.Tensor,
    layer_bias: torch.Tensor | None,
    bn: _BatchNorm,
    mean: torch.Tensor,
    var: torch.Tensor,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor,
) -> None:
    """Write the eval-mode fold of ``bn`` into the preceding layer's weights, in place.

    ``bn(layer(x)) = layer'(x)`` with ``W' = W * s`` (per output channel) and
    ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``: exact up to rounding.
    """
    scale, shift = _fold_scale(bn, mean, var, bn_weight, bn_bias)
    view = (-1,) + (1,) * (layer_weight.dim() - 1)
    torch.mul(layer_weight, scale.view(view), out=out_weight)
    if layer_bias is not None:
        torch.addcmul(shift, layer_bias, scale, out=out_bias)
    else:
        out_bias.copy_(shift)


class StatsRecorder:
    """Forward pre-hooks that record each BN layer's input mean and unbiased variance.

    Used by the vmap strategy, where buffers cannot be updated in place per point: the hooks
    see the per-point tensor inside ``torch.vmap`` and the caller returns what they recorded.
    Averaging the recorded values over the statistics batches gives exactly what train-mode BN
    with ``momentum=None`` accumulates.
    """

    def __init__(self, bns: dict[str, _BatchNorm]) -> None:
        self.names = list(bns)
        self.records: list[torch.Tensor] = []
        self._handles = [bn.register_forward_pre_hook(self._hook) for bn in bns.values()]

    def _hook(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.records.append(flat.mean(dim=1))
        self.records.append(flat.var(dim=1, unbiased=True))

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()
