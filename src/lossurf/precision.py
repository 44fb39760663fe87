"""Floating-point precision of surface evaluation (and, through the same context, training).

- ``fp32`` (strict, the default for surfaces): float32 everywhere, TF32 off for CUDA matmuls and
  cuDNN convolutions, so a GPU surface matches a CPU one to float32 rounding.
- ``tf32``: TF32 on for CUDA matmuls and convolutions (10-bit mantissa inputs, float32
  accumulation); no effect on CPU.
- ``bf16``: ``torch.autocast`` to bfloat16 on the evaluation device (CPU too); the weight
  combinations, BN folding and the loss reductions stay in float32/float64.

Each setting's error against float64 is measured by ``benchmarks/precision.py`` and stated in
``docs/precision.md``.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Literal

import torch

from lossurf.errors import LossurfError

__all__ = ["Precision", "PRECISIONS", "check_precision", "precision_context", "no_autocast"]

Precision = Literal["fp32", "tf32", "bf16"]

#: Every precision, with a one-line description (error messages, CLI help, docs).
PRECISIONS: dict[str, str] = {
    "fp32": "float32, TF32 off (strict; the default for surfaces)",
    "tf32": "float32 storage, TF32 CUDA matmuls and convolutions",
    "bf16": "bfloat16 autocast of the forward passes",
}


def check_precision(value: object) -> str:
    """``value`` if it names a precision, else a :class:`LossurfError` naming the choices."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise LossurfError(f"unknown precision {value!r}; use one of: {', '.join(PRECISIONS)}")
    return value


@contextmanager
def precision_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """Run the body at ``precision`` on ``device``; the global TF32 flags are restored after."""
    check_precision(precision)
    device = torch.device(device)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            if precision == "bf16" else nullcontext())
    try:
        with cast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def no_autocast(device: torch.device) -> torch.autocast:
    """A region kept in full precision under ``bf16`` (weight combinations must not round)."""
    return torch.autocast(device_type=device.type, enabled=False)
