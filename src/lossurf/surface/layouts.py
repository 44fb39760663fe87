"""Memory format per convolution for the CPU loop: channels-last, except where NCHW is faster.

The loop evaluates image models in channels-last layout, where oneDNN's convolutions are
1.1-3.3x faster than in NCHW at 8x8 and above. At small spatial sizes with many channels the
order reverses. Measured on this project's 2-core machine (3x3 convolutions, batch 128, time
in NCHW over time in channels-last, 2 threads):

============  ====  ====  ====  ====  ====
spatial size   32    64   128   256   512   (channels in = out)
============  ====  ====  ====  ====  ====
8x8           3.30  2.22  1.14  1.31  1.18
4x4           0.88  1.23  1.28  0.75  0.68
2x2           1.15  1.25  1.05  0.43  0.32
1x1           1.47  1.57  1.46  1.08  1.14
============  ====  ====  ====  ====  ====

So a VGG's last two stages (4x4 and 2x2 with 256-512 channels, about 40 % of its FLOPs) run up
to 3x faster in NCHW. No rule of shape alone covers other CPUs, so :func:`nchw_layers` times
each 2-D convolution on its own input, once per grid, in both formats; a layer switches to
NCHW only when that is clearly faster (:data:`MARGIN`). The loop then keeps those layers'
weights in NCHW order and hands them contiguous inputs; the values are the same up to the
summation order of the convolution (float32 rounding).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MARGIN", "conv_inputs", "nchw_layers"]

#: A layer runs in NCHW when that takes at most this share of its channels-last time: a
#: smaller difference is within the noise of a shared machine and not worth a layout change.
MARGIN = 0.9


def conv_inputs(work: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of each 2-D convolution of ``work`` (by qualified name) on the batch ``x``; a
    layer called twice keeps its first input. ``work`` runs as it is: pass a copy in eval mode."""
    names = {m: name for name, m in work.named_modules() if isinstance(m, nn.Conv2d)}
    seen: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple) -> None:
        seen.setdefault(names[module], args[0].detach().contiguous())

    hooks = [m.register_forward_pre_hook(keep) for m in names]
    try:
        with torch.no_grad():
            work(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def nchw_layers(model: nn.Module, x: torch.Tensor, repeats: int = 3,
                clock: Callable[[], float] = time.perf_counter) -> list[str]:
    """The 2-D convolutions of ``model`` that run faster in NCHW than channels-last on their
    inputs from ``x`` (one evaluation batch), by at least :data:`MARGIN`; sorted names.

    Each layer is timed alone in both formats, interleaved, best of ``repeats`` after a
    warm-up, at the calling thread's torch thread count, on a copy of ``model`` on ``x``'s
    device.
    """
    work = copy.deepcopy(model).to(x.device).eval()  # the user's model is never run
    inputs = conv_inputs(work, x)
    modules = dict(work.named_modules())
    chosen = []
    with torch.no_grad():
        for name, inp in inputs.items():
            if inp.dim() != 4:
                continue
            layer = modules[name]
            weight = layer.weight.detach()
            bias = None if layer.bias is None else layer.bias.detach()
            pairs = {fmt: (inp.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt))
                     for fmt in (torch.channels_last, torch.contiguous_format)}
            formats = dict.fromkeys(pairs, float("inf"))
            for z, w in pairs.values():  # warm-up: oneDNN builds its primitive for this shape
                layer._conv_forward(z, w, bias)
            for _ in range(repeats):  # interleaved, so that a burst of load hits both formats
                for fmt, (z, w) in pairs.items():
                    start = clock()
                    layer._conv_forward(z, w, bias)
                    formats[fmt] = min(formats[fmt], clock() - start)
            if formats[torch.contiguous_format] <= MARGIN * formats[torch.channels_last]:
                chosen.append(name)
    return sorted(chosen)
