"""CIFAR-10 from the standard files, in either layout, plus cifar.torch-style augmentation.

The directory ``spec.data_dir`` (or its child ``cifar-10-batches-bin`` / ``cifar-10-batches-py``)
holds the five training batches and the test batch, either in the binary format (one label byte
then 3072 pixel bytes, channel-major, per record) or the python format (pickled dicts). The
python files are read with a restricted unpickler: a pickle can run arbitrary code, and data
directories get shared, so only the globals that rebuild a dict of numpy arrays are allowed.

Inputs become float32 ``[N, 3, 32, 32]`` standardized per channel with the mean and (population)
standard deviation of all 50000 training images, computed exactly from pixel histograms.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lossurf.config import DataSpec
from lossurf.data.base import Dataset, seeded_subset
from lossurf.errors import LossurfError

__all__ = ["OPTIONS", "CropFlip", "augmentation", "load_cifar10", "random_crop_flip", "read_cifar_dir", "RestrictedUnpickler"]

#: Keys of ``spec.options`` this loader understands.
OPTIONS: frozenset[str] = frozenset()

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
RECORD = 1 + 3 * 32 * 32


class _Malformed(Exception):
    """Internal: a file of an otherwise recognised layout is broken."""


def _ndarray_reconstruct() -> Any:
    # numpy 1.x names it numpy.core.multiarray._reconstruct, numpy 2.x numpy._core...; take the
    # function itself from an array's reduce tuple so both spellings resolve to the same object.
    return np.ndarray((0,), np.uint8).__reduce__()[0]


def _frombuffer() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2.x, else 1.x
    return core.numeric._frombuffer


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    reconstruct, frombuffer = _ndarray_reconstruct(), _frombuffer()
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Pickle protocol 5 (numpy >= 1.16 writing with protocol 5) rebuilds arrays with this.
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        # Python 3 writing protocol 2 stores bytes as _codecs.encode(str, "latin1"): pure.
        ("_codecs", "encode"): _codecs.encode,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds dicts, lists, bytes and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`LossurfError`
    before it can be called.
    """

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented above
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise LossurfError(
                f"refusing to unpickle global {module}.{name}: CIFAR-10 python batches contain "
                f"only dicts and numpy arrays; this file is not a genuine CIFAR-10 batch "
                f"(download it again from {URL})"
            ) from None


def _expected_message(data_dir: Path | None, problem: str) -> str:
    return (
        f"CIFAR-10 data not usable in {data_dir}: {problem}. Expected data_dir to be, or to "
        f"contain, either 'cifar-10-batches-bin/' with data_batch_1.bin .. data_batch_5.bin and "
        f"test_batch.bin (binary version: records of 1 label byte + 3072 pixel bytes) or "
        f"'cifar-10-batches-py/' with data_batch_1 .. data_batch_5 and test_batch (python "
        f"version: pickled dicts with b'data' and b'labels'). Download and extract "
        f"cifar-10-binary.tar.gz or cifar-10-python.tar.gz from {URL} and set data.data_dir"
    )


def _read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise _Malformed(f"{path.name} has {raw.size} bytes, not a multiple of {RECORD}")
    records = raw.reshape(-1, RECORD)
    labels = _in_range(path, records[:, 0].astype(np.int64),
                       "record {i} has label {v}, outside 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _read_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # encoding="bytes": the official files are Python 2 pickles whose str keys are bytes.
        batch = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except LossurfError as error:  # a forbidden global: report it with the expected files
        raise _Malformed(f"{path.name}: {error}") from None
    except Exception as error:  # any unpickling failure means a corrupt file
        raise _Malformed(f"{path.name} is not a readable pickle ({type(error).__name__})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise _Malformed(f"{path.name} is not a dict with keys b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise _Malformed(f"{path.name}: b'data' is not a uint8 [N, 3072] array")
    if data.shape[1] != RECORD - 1 or data.shape[0] == 0:
        raise _Malformed(f"{path.name}: b'data' has shape {data.shape}, not [N, 3072]")
    return data.reshape(-1, 3, 32, 32), _py_labels(path, labels, data.shape[0])


def _bad_labels(path: Path, problem: str) -> _Malformed:
    return _Malformed(
        f"{path.name}: {problem}; labels must be integers 0..9, one per image (the file is "
        f"damaged or not a CIFAR-10 batch: download and extract it again)"
    )


def _in_range(path: Path, labels: np.ndarray, problem: str) -> np.ndarray:
    """``labels`` (int64) if all are in 0..9, else :class:`_Malformed` naming the first other,
    ``problem`` formatted with its index ``i`` and value ``v``."""
    outside = np.flatnonzero((labels < 0) | (labels > 9))
    if outside.size:
        i = int(outside[0])
        raise _bad_labels(path, problem.format(i=i, v=int(labels[i])))
    return labels


def _py_labels(path: Path, labels: Any, count: int) -> np.ndarray:
    """The b'labels' entry of a python batch as int64, checked: ``count`` integers in 0..9.

    Checked element by element before any cast: numpy would truncate 2.7 to 2, and raise its
    own TypeError, ValueError or OverflowError for None, bytes or 2**70.
    """
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise _bad_labels(path, f"b'labels' has shape {labels.shape}, not ({count},)")
        if labels.dtype.kind not in "iu":  # not bool, float, object, bytes, ...
            raise _bad_labels(path, f"b'labels' holds {labels.dtype} values, not integers")
    elif isinstance(labels, (list, tuple)):
        for i, value in enumerate(labels):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                raise _bad_labels(path, f"b'labels' holds {shown} (a {type(value).__name__}) "
                                        f"at index {i}, not an integer")
            if not 0 <= value <= 9:  # before the cast: 2**70 does not fit int64
                raise _bad_labels(path, f"b'labels' holds {value} at index {i}, outside 0..9")
    else:
        kind = type(labels).__name__
        article = "an" if kind[:1] in "aeiou" else "a"
        raise _bad_labels(path, f"b'labels' is {article} {kind}, not a list")
    if len(labels) != count:
        raise _bad_labels(path, f"b'labels' has {len(labels)} labels for {count} images")
    return _in_range(path, np.asarray(labels, dtype=np.int64),
                     "b'labels' holds {v} at index {i}, outside 0..9")


def _find_layout(data_dir: Path) -> tuple[Path, str]:
    for folder in (data_dir, data_dir / "cifar-10-batches-bin", data_dir / "cifar-10-batches-py"):
        for kind, suffix in (("bin", ".bin"), ("py", "")):
            if all((folder / f"{f}{suffix}").is_file() for f in [*TRAIN_FILES, TEST_FILE]):
                return folder, kind
    for folder in (data_dir, data_dir / "cifar-10-batches-bin", data_dir / "cifar-10-batches-py"):
        for name in [*TRAIN_FILES, TEST_FILE]:
            for path in (folder / name, folder / f"{name}.bin"):
                if path.is_dir():  # an extraction gone wrong; "not found" would mislead
                    raise _Malformed(f"{path.relative_to(data_dir)} is a directory, not a file")
    raise _Malformed("the training and test batch files were not found")


def read_cifar_dir(
    data_dir: Path | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Read the raw CIFAR-10 arrays from either layout.

    Args:
        data_dir: the extracted directory or its parent.

    Returns:
        ``(train_images, train_labels, test_images, test_labels, layout)``: uint8
        ``[N, 3, 32, 32]`` images, int64 labels in 0..9, and ``"bin"`` or ``"py"``.

    Raises:
        LossurfError: the directory, a file, or a record is missing or malformed (one message
            naming the expected files of both layouts and where to get them).
    """
    if data_dir is None:
        raise LossurfError(_expected_message(data_dir, "no data_dir given"))
    data_dir = Path(data_dir).expanduser()
    try:
        if data_dir.exists() and not data_dir.is_dir():
            raise _Malformed("it is a file, not a directory")
        if not data_dir.is_dir():
            raise _Malformed("the directory does not exist")
        folder, layout = _find_layout(data_dir)
        read = _read_bin if layout == "bin" else _read_py
        suffix = ".bin" if layout == "bin" else ""
        # each reader checks its labels: integers 0..9, one per image
        parts = [read(folder / f"{name}{suffix}") for name in [*TRAIN_FILES, TEST_FILE]]
    except (_Malformed, OSError) as error:
        raise LossurfError(_expected_message(data_dir, str(error))) from None
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    return train_x, train_y, parts[-1][0], parts[-1][1], layout


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and population std of uint8 ``[N, C, H, W]`` images.

    Uses a 256-bin histogram per channel, so no float copy of the whole set is made.
    """
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        mean = (counts * values).sum() / counts.sum()
        means.append(mean)
        stds.append(np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    return np.array(means), np.array(stds)


def augmentation(spec: DataSpec) -> "CropFlip | None":
    """The augmentation that ``spec.augment`` asks for, or None.

    ``{flip: true, crop: false}`` is cifar.torch's training script (random horizontal flips
    only); ``crop: true`` adds random crops; a bare ``true`` means crop and flip (its meaning
    before the two were separate, so old configs train as they did).
    """
    aug = spec.augment
    if not aug:
        return None
    crop, flip = (True, True) if aug is True else (aug.crop, aug.flip)
    return CropFlip(crop=crop, flip=flip)


@dataclass(frozen=True)
class CropFlip:
    """Random crop from the zero-padded image plus random horizontal flip, per example
    (an :class:`~lossurf.data.base.EpochAugment`).

    Each example is padded with ``padding`` zeros on every side (zero in normalized units,
    i.e. the training mean colour), cropped back to its size at an offset drawn uniformly from
    ``0..2*padding`` in each axis, and mirrored left-right with probability 1/2. ``crop=False``
    keeps every image in place, ``flip=False`` never mirrors; the same random numbers are drawn
    either way, so switching one off leaves the other's draws unchanged.

    :meth:`draw` takes the numbers batch by batch from the generator in the order the per-batch
    form always drew them (row offsets, column offsets, flips), so an epoch drawn at once gives
    the batches that runs trained before it existed got, and their directories resume unchanged.
    """

    padding: int = 4
    crop: bool = True
    flip: bool = True

    def draw(self, sizes: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """``[sum(sizes), 3]`` int16 rows ``(row offset, column offset, mirror)`` for batches of
        ``sizes`` examples, drawn on the generator's device."""
        span, device = 2 * self.padding + 1, generator.device
        parts = []
        for b in sizes:
            oy = torch.randint(0, span, (b,), generator=generator, device=device)
            ox = torch.randint(0, span, (b,), generator=generator, device=device)
            mirror = torch.rand(b, generator=generator, device=device) < 0.5
            parts.append(torch.stack([oy, ox, mirror.long()], dim=1))
        params = torch.cat(parts) if parts else torch.zeros((0, 3), dtype=torch.int64)
        if not self.crop:
            params[:, :2] = self.padding
        if not self.flip:
            params[:, 2] = 0
        return params.to(torch.int16)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The augmented ``[B, C, H, W]`` batch (a new tensor) for ``params`` rows of
        :meth:`draw`, on ``x``'s device (``params`` must be there too)."""
        mirror = params[:, 2].bool()
        if not self.crop:  # flips alone: no padding or gather (same values, fewer kernels)
            return torch.where(mirror[:, None, None, None], x.flip(-1), x)
        b, _, h, w = x.shape
        oy, ox = params[:, 0].long(), params[:, 1].long()
        p = self.padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H]
        cols = torch.arange(w, device=x.device).expand(b, w)
        cols = torch.where(mirror[:, None], w - 1 - cols, cols) + ox[:, None]  # [B, W]
        batch = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indices around a slice put their dims first: result is [B, H, W, C].
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One batch, its numbers drawn from ``generator`` (the per-batch ``augment`` form)."""
        return self.apply(x, self.draw([len(x)], generator).to(x.device))


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4, *,
                     crop: bool = True, flip: bool = True) -> torch.Tensor:
    """Random crop and flip of one ``[B, C, H, W]`` batch (see :class:`CropFlip`).

    Every random number comes from ``generator`` (drawn on its device), so a seed gives the
    same batch on every run and device.

    Args:
        x: ``[B, C, H, W]`` batch.
        generator: source of all randomness.
        padding: pixels of zero padding (default 4, as for CIFAR-10).

    Returns:
        The augmented ``[B, C, H, W]`` batch (a new tensor).
    """
    return CropFlip(padding, crop, flip)(x, generator)


def load_cifar10(spec: DataSpec) -> Dataset:
    """Load CIFAR-10 from ``spec.data_dir`` as standardized float32 ``[N, 3, 32, 32]`` images.

    Args:
        spec: ``data_dir`` (either layout, auto-detected), ``augment`` (flips and optional
            crops, see :func:`augmentation`), ``max_train``/``max_test`` (fixed subsets seeded by
            ``split_seed``; normalization always uses all training images).

    Returns:
        A classification :class:`Dataset`; ``meta`` holds per-channel ``mean``/``std`` (in
        0..255 pixel units) and the detected ``layout``.

    Raises:
        LossurfError: the files are missing or malformed.
    """
    train_u8, train_y, test_u8, test_y, layout = read_cifar_dir(spec.data_dir)
    mean, std = channel_stats(train_u8)
    if np.any(std == 0):
        raise LossurfError(
            _expected_message(spec.data_dir, "a colour channel is constant over all images")
        )

    def tensors(
        images: np.ndarray, labels: np.ndarray, keep: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = seeded_subset(len(images), keep, spec.split_seed).numpy()
        x = images[idx].astype(np.float32)
        x -= mean.astype(np.float32)[:, None, None]  # in place: 50000 images are 600 MB
        x /= std.astype(np.float32)[:, None, None]
        return torch.from_numpy(x), torch.from_numpy(labels[idx])

    train_x, train_t = tensors(train_u8, train_y, spec.max_train)
    test_x, test_t = tensors(test_u8, test_y, spec.max_test)
    return Dataset(
        name="cifar10",
        task="classification",
        train_x=train_x,
        train_y=train_t,
        test_x=test_x,
        test_y=test_t,
        num_classes=10,
        augment=augmentation(spec),
        meta={"mean": mean.tolist(), "std": std.tolist(), "layout": layout},
    )
