"""Where a data set's tensors live while a run trains: on the training device when they fit.

A GPU run whose inputs stay on the host pays a host-to-device copy per minibatch; a run whose
inputs live on the device gathers each minibatch there. :func:`place` moves a data set's
tensors to the device once per process (a small cache keyed on the data set object and the
device, so the runs of an experiment share one copy) when they take under a quarter of the
device's free memory; otherwise they stay on the host and each minibatch is gathered into
pinned memory and copied asynchronously. On the CPU nothing moves.

A training set whose augmentation is a plain ``augment(x, generator)`` callable (a user's data
set) stays on the host: that callable has always received host batches.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from lossurf.data.base import Dataset, EpochAugment

__all__ = ["PlacedData", "place", "normalize_device", "fits_on_device", "gather_batch", "RESIDENT_SHARE"]

#: Largest share of the device's free memory the data may take to be kept there.
RESIDENT_SHARE = 0.25


@dataclass(frozen=True)
class PlacedData:
    """A data set's tensors where training reads them.

    ``train_resident``: the training tensors are on ``device`` (minibatches are gathered
    there); otherwise they are on the host and :func:`gather_batch` moves each minibatch.
    The test tensors are on ``device`` when ``test_resident``, else on the host (the
    evaluation moves them per batch).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    device: torch.device
    train_resident: bool
    test_resident: bool


def normalize_device(device: torch.device | str) -> torch.device:
    """``device`` with its index filled in (``cuda`` -> ``cuda:0``), so cache keys compare."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` take under :data:`RESIDENT_SHARE` of ``device``'s free memory
    (always true on the CPU, where the data already are)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes < RESIDENT_SHARE * free
    return False  # another accelerator: no way to ask, so move per batch as before


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# (id(dataset), device) -> (a weak reference to the dataset, its placement). The weak reference
# proves the id still names the same object (ids are reused after an object dies).
_CACHE: dict[tuple[int, str], tuple[weakref.ref, PlacedData]] = {}


def place(dataset: Dataset, device: torch.device | str) -> PlacedData:
    """``dataset``'s tensors on ``device`` when they fit, moved once per process and device.

    Training and test tensors are decided together (training first): the test set goes to
    the device too only if both fit.
    """
    device = normalize_device(device)
    key = (id(dataset), str(device))
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is dataset:
        return hit[1]
    for stale in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[stale]
    on_host = device.type == "cpu"
    train = (dataset.train_x, dataset.train_y)
    test = (dataset.test_x, dataset.test_y)
    # A plain augment(x, generator) callable gets host batches, as it always has.
    train_ok = on_host or dataset.augment is None or isinstance(dataset.augment, EpochAugment)
    train_resident = train_ok and fits_on_device(_nbytes(*train), device)
    test_resident = train_resident and fits_on_device(_nbytes(*train, *test), device)
    if train_resident and not on_host:
        train = tuple(t.to(device) for t in train)
    if test_resident and not on_host:
        test = tuple(t.to(device) for t in test)
    placed = PlacedData(*train, *test, device=device, train_resident=train_resident,
                        test_resident=test_resident)
    _CACHE[key] = (weakref.ref(dataset), placed)
    return placed


def gather_batch(source: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``source[index]`` on ``device`` for a host ``source``: gathered into pinned memory and
    copied without blocking on CUDA (the pinned block is recycled only once the copy is done),
    a plain gather on the CPU."""
    if device.type != "cuda":
        return source[index].to(device)
    buffer = torch.empty((len(index), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
    torch.index_select(source, 0, index, out=buffer)
    return buffer.to(device, non_blocking=True)
