"""Device names a user may give (``--device``, ``device:`` in an experiment file) and whether
this machine has them.

:func:`device_name` checks the spelling only and imports nothing heavy (configs validate it
without torch); :func:`check_device` also asks torch whether the device exists here, so that a
command fails before it writes anything rather than on the first tensor it moves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lossurf.errors import LossurfError

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_HELP", "device_name", "check_device", "api_device"]

#: The spellings lossurf accepts, as a user reads them.
DEVICE_HELP = "cpu, cuda, cuda:N or mps"

_DEVICE = re.compile(r"(cpu|mps|cuda)(:(\d{1,4}))?")


def device_name(name: object) -> str:
    """``name`` normalized (stripped, lower case) if it is a device lossurf knows.

    Raises:
        LossurfError: not a string, or not one of ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    """
    text = name.strip().lower() if isinstance(name, str) else None
    match = _DEVICE.fullmatch(text) if text else None
    # torch accepts "cpu:0" and "mps:0" too, but nothing else about them is indexed
    if match is None or (match.group(2) and match.group(1) != "cuda"):
        raise LossurfError(f"unknown device {name!r}; use {DEVICE_HELP}")
    return text  # type: ignore[return-value]


def check_device(name: object, *, fix: str = "--device cpu") -> "torch.device":
    """The ``torch.device`` for ``name`` (a name or a ``torch.device``) if this machine has it.

    ``fix`` is how the caller's user asks for the CPU instead, in the message (the Python API
    passes ``device='cpu'``).

    Raises:
        LossurfError: an unknown name, CUDA asked of a torch built without it or of a machine
            without a GPU, a GPU index beyond the count, or MPS where it is unavailable.
    """
    import torch

    if isinstance(name, torch.device):  # "cpu:0" is the CPU; only CUDA devices are indexed
        name = str(name) if name.type == "cuda" else name.type
    text = device_name(name)
    device = torch.device(text)
    if device.type == "cuda":
        if torch.version.cuda is None:
            why = f"torch {torch.__version__} is built without CUDA"
        elif not torch.cuda.is_available():
            why = "no GPU found"
        else:
            count = torch.cuda.device_count()
            if device.index is None or device.index < count:
                return device
            why = f"{count} GPU{'s' if count != 1 else ''} found, cuda:0 to cuda:{count - 1}"
        raise LossurfError(f"device {text!r} is not available here ({why}); use {fix}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LossurfError(f"device 'mps' is not available here (no Apple GPU found); use {fix}")
    return device


def api_device(device: object) -> "torch.device | None":
    """A Python API's ``device=`` argument checked as :func:`check_device` does (None stays
    None: the caller's default), worded for a Python caller."""
    return None if device is None else check_device(device, fix="device='cpu'")
