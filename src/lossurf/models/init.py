"""Initialization schemes applied after a model is built (``ModelSpec.init``).

``default`` keeps whatever the model's constructor drew: PyTorch's init, or the init of the
paper's source where a model reproduces it (cifar.torch NIN/VGG, Zaremba's LSTM).

``normal`` is the exotic initialization of the paper's appendix A.5 (after Swirszcz et al.
2016): N(-10, 0.01) or N(-1, 1). We draw **every parameter** from N(mean, std): weights,
biases and the BatchNorm affine scale and shift alike. The paper says "initial parameters
drawn from" these distributions without exceptions, and any exception (say, keeping BatchNorm
scales at 1) would be a choice the paper never made. Buffers (BatchNorm running statistics and
batch counters) are not parameters and stay untouched: they are statistics of the data, not
part of the initialization. Tied parameters are drawn once.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lossurf.config import InitSpec
from lossurf.errors import LossurfError

__all__ = ["INIT_SCHEMES", "apply_init"]


def _default(model: nn.Module, init: InitSpec, generator: torch.Generator | None) -> None:
    """Leave the constructor's initialization as it is."""


@torch.no_grad()
def _normal(model: nn.Module, init: InitSpec, generator: torch.Generator | None) -> None:
    """Draw every parameter from N(init.mean, init.std)."""
    # model.parameters() yields shared (tied) parameters once, so each is drawn once.
    for param in model.parameters():
        if generator is not None and generator.device != param.device:
            # A CPU generator cannot fill a CUDA tensor: draw on its device, then copy.
            draw = torch.empty(param.shape, dtype=param.dtype, device=generator.device)
            param.copy_(draw.normal_(init.mean, init.std, generator=generator))
        else:
            param.normal_(init.mean, init.std, generator=generator)


#: Registered schemes: ``name -> fn(model, init, generator)``.
INIT_SCHEMES: dict[str, Callable[[nn.Module, InitSpec, torch.Generator | None], None]] = {
    "default": _default,
    "normal": _normal,
}


def apply_init(
    model: nn.Module, init: InitSpec, generator: torch.Generator | None = None
) -> nn.Module:
    """Apply the initialization scheme ``init`` to ``model`` in place.

    Args:
        model: the freshly built module.
        init: the scheme (``default`` or ``normal`` with ``mean`` and ``std``).
        generator: random source for the draws (default None: the global RNG).

    Returns:
        The same ``model``, for chaining.

    Raises:
        LossurfError: the scheme is not registered.
    """
    scheme = INIT_SCHEMES.get(init.scheme)
    if scheme is None:
        raise LossurfError(
            f"unknown init scheme {init.scheme!r}; use one of: {', '.join(sorted(INIT_SCHEMES))}"
        )
    scheme(model, init, generator)
    return model
