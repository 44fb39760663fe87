"""Digits loader (split, stratification, normalization, subsets) and the data registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from lossurf.config import DataSpec
from lossurf.data import DATASETS, load, names
from lossurf.errors import LossurfError

RAW = sklearn_digits()
LABELS = RAW.target.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return load(DataSpec(name="digits"))


def _raw_pixels(x: torch.Tensor, meta: dict) -> np.ndarray:
    """Undo the scalar standardization; the embedded pixels are integers 0..16."""
    raw = x.double().numpy() * meta["std"] + meta["mean"]
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-4)
    return np.round(raw).astype(np.int64).reshape(len(x), 64)


def _row_multiset(pixels: np.ndarray, labels: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() + bytes([int(y)]) for row, y in zip(pixels, labels))


def test_shapes_and_types(data):
    assert data.train_x.shape[1:] == (1, 8, 8) and data.train_x.dtype == torch.float32
    assert data.train_y.dtype == torch.int64 and data.num_classes == 10
    assert data.task == "classification" and data.augment is None
    assert data.model_options() == {"num_classes": 10, "in_channels": 1}


def test_stratified_split_sizes_and_partition(data):
    per_class = np.bincount(LABELS, minlength=10)
    expected_test = np.round(0.2 * per_class).astype(int)
    assert np.bincount(data.test_y.numpy(), minlength=10).tolist() == expected_test.tolist()
    assert np.bincount(data.train_y.numpy(), minlength=10).tolist() == (
        per_class - expected_test
    ).tolist()
    assert len(data.train_x) + len(data.test_x) == 1797
    # Train and test together are exactly the embedded data set, each image once.
    train = _raw_pixels(data.train_x, data.meta)
    test = _raw_pixels(data.test_x, data.meta)
    labels = np.concatenate([data.train_y, data.test_y])
    joined = _row_multiset(np.concatenate([train, test]), labels)
    assert joined == _row_multiset(RAW.data.astype(np.int64), LABELS)


def test_normalization_uses_training_statistics(data):
    train = _raw_pixels(data.train_x, data.meta).astype(np.float64)
    assert data.meta["mean"] == pytest.approx(train.mean(), rel=1e-12)
    assert data.meta["std"] == pytest.approx(train.std(), rel=1e-12)
    assert abs(data.train_x.double().mean().item()) < 1e-6
    assert data.train_x.double().std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    # The test split is scaled with the same (training) constants, so it is only near 0 / 1.
    assert abs(data.test_x.mean().item()) < 0.1


def test_deterministic_and_seeded(data):
    again = load(DataSpec(name="digits"))
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    other = load(DataSpec(name="digits", split_seed=1))
    assert len(other.test_x) == len(data.test_x) and not torch.equal(other.test_x, data.test_x)


def test_test_fraction_option():
    half = load(DataSpec(name="digits", options={"test_fraction": 0.5}))
    per_class = np.bincount(LABELS, minlength=10)
    assert len(half.test_x) == int(np.round(0.5 * per_class).sum())
    for bad in (0, 1.5, "0.2", True):
        with pytest.raises(LossurfError, match="test_fraction=.* is invalid; give a number"):
            load(DataSpec(name="digits", options={"test_fraction": bad}))


def test_max_train_and_max_test_keep_fixed_subsets(data):
    spec = DataSpec(name="digits", max_train=100, max_test=30, split_seed=0)
    part = load(spec)
    assert part.train_x.shape == (100, 1, 8, 8) and part.test_x.shape == (30, 1, 8, 8)
    assert torch.equal(load(spec).train_x, part.train_x)  # fixed
    full_rows = {r.numpy().tobytes() for r in data.train_x}
    assert all(r.numpy().tobytes() in full_rows for r in part.train_x)  # a subset of the rows
    assert part.meta["mean"] == data.meta["mean"]  # statistics of the whole training split


def test_registry_and_errors():
    assert names() == sorted(DATASETS) == ["cifar10", "digits", "ptb", "synthetic-text"]
    with pytest.raises(LossurfError, match=r"unknown data set 'mnist'; choose one of \['cifar10'"):
        load(DataSpec(name="mnist"))
    unknown = r"unknown option\(s\) \['tets_fraction'\].*test_fraction"
    with pytest.raises(LossurfError, match=unknown):
        load(DataSpec(name="digits", options={"tets_fraction": 0.3}))
    with pytest.raises(LossurfError, match="data set 'digits' has no augmentation; set augment"):
        load(DataSpec(name="digits", augment=True))
