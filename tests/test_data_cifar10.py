"""CIFAR-10 loader: both file layouts written here in the real formats, the restricted unpickler,
the error message, and the crop + flip augmentation against a brute-force reference."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from lossurf.config import DataSpec
from lossurf.data import load, seeded_subset
from lossurf.data.cifar10 import random_crop_flip
from lossurf.errors import LossurfError

PER_BATCH = 20



TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _make_images(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [*TRAIN, "test_batch"]:
        images = rng.integers(0, 256, size=(PER_BATCH, 3, 32, 32), dtype=np.uint8)
        batches[name] = (images, rng.integers(0, 10, size=PER_BATCH).astype(np.int64))
    return batches


def _write_bin(folder, batches) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        with open(folder / f"{name}.bin", "wb") as f:
            for image, label in zip(images, labels):
                f.write(bytes([int(label)]) + image.tobytes())  # CHW order, row-major


def _write_py(folder, batches, protocol: int | str = 2) -> None:
    """Pickled dicts; protocol "numpy1" renames the numpy 2 globals to the numpy 1.x names that
    the official files (written by Python 2 and numpy 1.x) use."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": images.reshape(len(images), -1),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
        }
        blob = pickle.dumps(batch, protocol=2 if protocol == "numpy1" else protocol)
        if protocol == "numpy1":
            assert b"cnumpy._core.multiarray\n" in blob
            blob = blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        (folder / name).write_bytes(blob)


def _expected(batches):
    """Per-channel standardization computed naively in float64 from the training images."""
    train = np.concatenate([batches[n][0] for n in TRAIN]).astype(np.float64)
    mean = train.mean(axis=(0, 2, 3))[None, :, None, None]
    std = train.std(axis=(0, 2, 3))[None, :, None, None]  # population std
    test = batches["test_batch"][0].astype(np.float64)
    train_y = np.concatenate([batches[n][1] for n in TRAIN])
    return (train - mean) / std, train_y, (test - mean) / std, batches["test_batch"][1]


@pytest.mark.parametrize(
    "layout, child, protocol",
    [
        ("bin", "cifar-10-batches-bin", None),
        ("bin", None, None),
        ("py", "cifar-10-batches-py", 2),
        ("py", None, 4),
        ("py", "cifar-10-batches-py", 5),
        ("py", "cifar-10-batches-py", "numpy1"),
    ],
)
def test_loaded_values_equal_written_images(tmp_path, layout, child, protocol):
    batches = _make_images()
    folder = tmp_path / child if child else tmp_path
    if layout == "bin":
        _write_bin(folder, batches)
    else:
        _write_py(folder, batches, protocol)
    data = load(DataSpec(name="cifar10", data_dir=tmp_path))
    train_x, train_y, test_x, test_y = _expected(batches)
    assert data.train_x.dtype == torch.float32 and data.train_x.shape == (100, 3, 32, 32)
    assert data.test_x.shape == (20, 3, 32, 32) and data.train_y.dtype == torch.int64
    np.testing.assert_allclose(data.train_x.numpy(), train_x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(data.test_x.numpy(), test_x, rtol=0, atol=1e-6)
    assert data.train_y.tolist() == train_y.tolist() and data.test_y.tolist() == test_y.tolist()
    assert data.num_classes == 10 and data.task == "classification" and data.augment is None
    assert data.meta["layout"] == layout
    assert abs(data.train_x.mean().item()) < 1e-5  # standardized over the training set


def test_both_layouts_give_identical_tensors(tmp_path):
    batches = _make_images(seed=3)
    _write_bin(tmp_path / "a" / "cifar-10-batches-bin", batches)
    _write_py(tmp_path / "b" / "cifar-10-batches-py", batches)
    a = load(DataSpec(name="cifar10", data_dir=tmp_path / "a"))
    b = load(DataSpec(name="cifar10", data_dir=tmp_path / "b"))
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_max_train_and_max_test_keep_seeded_subsets(tmp_path):
    _write_bin(tmp_path, _make_images())
    full = load(DataSpec(name="cifar10", data_dir=tmp_path))
    spec = DataSpec(name="cifar10", data_dir=tmp_path, max_train=7, max_test=5, split_seed=4)
    part = load(spec)
    idx = seeded_subset(100, 7, 4)
    assert torch.equal(part.train_x, full.train_x[idx])
    assert torch.equal(part.train_y, full.train_y[idx])
    assert part.test_x.shape[0] == 5 and torch.equal(load(spec).train_x, part.train_x)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_restricted_unpickler_refuses_foreign_globals(tmp_path, payload):
    folder = tmp_path / "cifar-10-batches-py"
    _write_py(folder, _make_images())
    marker = tmp_path / "pwned"
    bad = _Evil(marker) if payload == "system" else None
    with open(folder / "data_batch_2", "wb") as f:
        if bad is not None:
            pickle.dump({b"data": bad, b"labels": []}, f, protocol=2)
        else:  # builtins.eval("...") through the REDUCE opcode
            f.write(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    with pytest.raises(LossurfError, match=r"refusing to unpickle global .*(system|eval)"):
        load(DataSpec(name="cifar10", data_dir=tmp_path))
    assert not marker.exists()


def _message_checks():
    """The one message: both layouts' files and the download page."""
    return (
        r"(?s)cifar-10-batches-bin.*data_batch_1\.bin.*test_batch\.bin"
        r".*cifar-10-batches-py.*data_batch_1 .*test_batch"
        r".*https://www\.cs\.toronto\.edu/~kriz/cifar\.html"
    )


def test_missing_directory_or_data_dir(tmp_path):
    with pytest.raises(LossurfError, match=_message_checks()):
        load(DataSpec(name="cifar10", data_dir=tmp_path / "nowhere"))
    with pytest.raises(LossurfError, match="no data_dir given"):
        load(DataSpec(name="cifar10"))


def test_missing_file(tmp_path):
    _write_bin(tmp_path / "cifar-10-batches-bin", _make_images())
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(LossurfError, match=_message_checks()):
        load(DataSpec(name="cifar10", data_dir=tmp_path))


def test_truncated_bin(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_bin(folder, _make_images())
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(LossurfError, match=r"data_batch_3\.bin has 61360 bytes, not a multiple"):
        load(DataSpec(name="cifar10", data_dir=tmp_path))
    with pytest.raises(LossurfError, match=_message_checks()):
        load(DataSpec(name="cifar10", data_dir=tmp_path))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"not a pickle at all", "not a readable pickle"),
        (pickle.dumps([1, 2, 3], protocol=2), "not a dict"),
        (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), "shape"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8"),
    ],
)
def test_bad_pickle(tmp_path, content, problem):
    folder = tmp_path / "cifar-10-batches-py"
    _write_py(folder, _make_images())
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(LossurfError, match=problem):
        load(DataSpec(name="cifar10", data_dir=tmp_path))


def test_labels_out_of_range(tmp_path):
    batches = _make_images()
    batches["data_batch_1"][1][0] = 12
    _write_bin(tmp_path, batches)
    problem = r"data_batch_1\.bin: record 0 has label 12, outside 0\.\.9"
    with pytest.raises(LossurfError, match=problem):
        load(DataSpec(name="cifar10", data_dir=tmp_path))


def _identify(x, out, padding):
    """Brute force: for each output example, every (oy, ox, flip) whose naive crop matches.

    Candidates are screened on the middle row (cheap), then confirmed on the whole image.
    """
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    h, w = x.shape[2:]
    mid = h // 2
    matches = []
    for oy in range(2 * padding + 1):
        for ox in range(2 * padding + 1):
            row = padded[:, :, oy + mid, ox : ox + w]
            for flip in (False, True):
                candidate = row.flip(-1) if flip else row
                hit = (candidate == out[:, :, mid]).flatten(1).all(1)
                for b in hit.nonzero().flatten().tolist():
                    crop = padded[b, :, oy : oy + h, ox : ox + w]
                    if torch.equal(crop.flip(-1) if flip else crop, out[b]):
                        matches.append((b, oy, ox, flip))
    return matches


def test_augmentation_matches_naive_crop_and_flip(tmp_path):
    _write_bin(tmp_path, _make_images())
    data = load(DataSpec(name="cifar10", data_dir=tmp_path, augment=True))
    assert data.augment is not None
    torch.manual_seed(0)
    x = torch.randn(400, 3, 32, 32)  # continuous values: every crop is distinguishable
    out = data.augment(x, torch.Generator().manual_seed(7))
    assert out.shape == x.shape and out.dtype == x.dtype
    matches = _identify(x, out, 4)
    assert sorted(b for b, *_ in matches) == list(range(400))  # exactly one explanation each
    flips = [f for *_, f in matches]
    assert 0.4 < sum(flips) / len(flips) < 0.6
    assert {oy for _, oy, _, _ in matches} == set(range(9)) == {ox for _, _, ox, _ in matches}
    centred_flipped = [b for b, oy, ox, f in matches if (oy, ox, f) == (4, 4, True)]
    assert centred_flipped
    for b in centred_flipped:
        assert torch.equal(out[b], x[b].flip(-1))


def test_augmentation_without_padding_only_flips():
    torch.manual_seed(1)
    x = torch.randn(64, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert torch.all(flipped ^ same) and 16 < int(flipped.sum()) < 48


def test_augmentation_deterministic_per_seed_and_differs_across_seeds():
    x = torch.randn(32, 3, 32, 32)
    original = x.clone()
    a = random_crop_flip(x, torch.Generator().manual_seed(11))
    b = random_crop_flip(x, torch.Generator().manual_seed(11))
    c = random_crop_flip(x, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, original)  # input untouched


def _py_with_labels(tmp_path, labels, count: int = PER_BATCH):
    """The python layout whose data_batch_1 has ``count`` valid images and ``labels``."""
    folder = tmp_path / "cifar-10-batches-py"
    _write_py(folder, _make_images())
    data = np.zeros((count, 3072), np.uint8)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    return folder


@pytest.mark.parametrize(
    "labels, problem",
    [
        (5, "b'labels' is an int, not a list"),
        ([b"cat"] * PER_BATCH, "b'labels' holds b'cat' (a bytes) at index 0, not an integer"),
        ([None] * PER_BATCH, "b'labels' holds None (a NoneType)"),
        ([2**70] * PER_BATCH, "b'labels' holds 1180591620717411303424 at index 0, outside 0..9"),
        (np.zeros((PER_BATCH, 2), np.int64), "b'labels' has shape (20, 2), not (20,)"),
        ([2.7] * PER_BATCH, "b'labels' holds 2.7 (a float)"),
        (np.full(PER_BATCH, 2.0), "b'labels' holds float64 values, not integers"),
        ([10] * PER_BATCH, "b'labels' holds 10 at index 0, outside 0..9"),
        ([-1] * PER_BATCH, "b'labels' holds -1 at index 0, outside 0..9"),
        ([True] * PER_BATCH, "b'labels' holds True (a bool)"),
        ([1] * (PER_BATCH - 1), "19 labels for 20 images"),
        ("0" * PER_BATCH, "b'labels' is a str, not a list"),
    ],
)
def test_bad_python_labels_are_named(tmp_path, labels, problem):
    """Labels must be integers 0..9, one per image; anything else names the file and the fix
    (int and float labels were cast silently, others raised TypeError/ValueError/OverflowError)."""
    _py_with_labels(tmp_path, labels)
    with pytest.raises(LossurfError) as caught:
        load(DataSpec(name="cifar10", data_dir=tmp_path))
    message = str(caught.value)
    assert "data_batch_1" in message and problem in message, message
    assert "integers 0..9, one per image" in message and "download" in message.lower(), message
    assert "\n" not in message


def test_numpy_integer_labels_load(tmp_path):
    """Integer arrays of any integer dtype are valid labels (not only lists of ints)."""
    _py_with_labels(tmp_path, np.arange(PER_BATCH, dtype=np.uint8) % 10)
    data = load(DataSpec(name="cifar10", data_dir=tmp_path))
    assert data.train_y[:PER_BATCH].tolist() == [i % 10 for i in range(PER_BATCH)]


def test_paths_of_the_wrong_kind_say_so(tmp_path):
    """A data_dir that is a file, and a batch that is a directory, are named as such (they
    said the directory does not exist, and the files were not found)."""
    _write_py(tmp_path / "cifar-10-batches-py", _make_images())
    with pytest.raises(LossurfError, match=r"data_batch_1: it is a file, not a directory"):
        load(DataSpec(name="cifar10", data_dir=tmp_path / "cifar-10-batches-py" / "data_batch_1"))
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    (tmp_path / "cifar-10-batches-py" / "test_batch").mkdir()
    directory = r"cifar-10-batches-py/test_batch is a directory, not a file"
    with pytest.raises(LossurfError, match=directory):
        load(DataSpec(name="cifar10", data_dir=tmp_path))
