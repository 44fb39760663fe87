"""The embedded default data set: scikit-learn's 8x8 handwritten digits (no download).

1797 grey-scale images, 10 classes, pixel values 0..16. The split is a fixed stratified one
drawn from ``spec.split_seed``; inputs are standardized with ONE scalar mean/std pair computed
over every pixel of the training split (a per-pixel pair would divide by zero: the corner pixels
are 0 in nearly every image).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lossurf.config import DataSpec
from lossurf.data.base import Dataset, seeded_subset
from lossurf.errors import LossurfError

__all__ = ["OPTIONS", "load_digits", "stratified_split"]

#: Keys of ``spec.options`` this loader understands.
OPTIONS = frozenset({"test_fraction"})

DEFAULT_TEST_FRACTION = 0.2


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so every class keeps (about) the same share in train and test.

    Each class ``c`` with ``n_c`` examples sends ``round(test_fraction * n_c)`` of them, chosen by
    a permutation seeded with ``seed``, to the test split. Implemented with ``torch.randperm``
    rather than scikit-learn's splitter so the split does not change with the sklearn version.

    Args:
        labels: ``[N]`` integer class labels.
        test_fraction: share of each class that goes to test, in (0, 1).
        seed: seed of the permutation.

    Returns:
        ``(train_idx, test_idx)``, each sorted ascending.
    """
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[torch.randperm(len(members), generator=generator).numpy()]
        n_test = int(round(test_fraction * len(members)))
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _test_fraction(spec: DataSpec) -> float:
    value = spec.options.get("test_fraction", DEFAULT_TEST_FRACTION)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise LossurfError(
            f"digits option test_fraction={value!r} is invalid; give a number between 0 and 1 "
            f"(default {DEFAULT_TEST_FRACTION})"
        )
    return float(value)


def load_digits(spec: DataSpec) -> Dataset:
    """Load scikit-learn's digits as ``[N, 1, 8, 8]`` float32 images with int64 labels.

    Args:
        spec: ``split_seed`` seeds the stratified split; ``options.test_fraction`` (default 0.2)
            sets its size; ``max_train``/``max_test`` keep fixed seeded subsets. The
            normalization statistics come from the whole training split (before ``max_train``),
            so a subset is exactly a subset of the rows of the full data set.

    Returns:
        A classification :class:`Dataset`; ``meta`` holds ``mean``, ``std`` (the scalar
        normalization) and ``test_fraction``.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # lazy: sklearn is slow to import

    test_fraction = _test_fraction(spec)
    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # [1797, 8, 8], values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)

    train_idx, test_idx = stratified_split(labels, test_fraction, spec.split_seed)
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())  # population std (ddof=0)
    if not math.isfinite(std) or std == 0:  # pragma: no cover - the embedded data never does this
        raise LossurfError("digits training split has zero variance; this should never happen")

    def tensors(idx: np.ndarray, keep: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx[seeded_subset(len(idx), keep, spec.split_seed).numpy()]
        x = torch.from_numpy(((images[idx] - mean) / std).astype(np.float32)).unsqueeze(1)
        return x, torch.from_numpy(labels[idx])

    train_x, train_y = tensors(train_idx, spec.max_train)
    test_x, test_y = tensors(test_idx, spec.max_test)
    return Dataset(
        name="digits",
        task="classification",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        meta={"mean": mean, "std": std, "test_fraction": test_fraction},
    )
