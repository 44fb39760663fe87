"""Data sets: ``load(spec)`` returns a :class:`Dataset` with a fixed, seeded split.

Registered: ``digits`` (embedded, scikit-learn), ``cifar10`` (from ``data_dir``), ``ptb``
(from ``data_dir``), ``synthetic-text`` (generated from a seeded grammar). A name containing
``:`` is an import path to a user's own factory, ``package.module:load`` (see
:mod:`lossurf.data.user` for what it receives and may return).

Example:
    >>> from lossurf.config import DataSpec
    >>> data = load(DataSpec(name="digits", max_train=256))
    >>> data.train_x.shape
    torch.Size([256, 1, 8, 8])
"""

from __future__ import annotations

from typing import Callable

from lossurf.config import DataSpec
from lossurf.data import cifar10, digits, synthetic_text, text
from lossurf.data.base import Augment, Dataset, seeded_subset
from lossurf.data.user import load_user
from lossurf.errors import LossurfError
from lossurf.imports import is_import_path

__all__ = ["Dataset", "Augment", "seeded_subset", "DATASETS", "OPTIONS", "load", "names"]

#: Name -> loader ``loader(spec) -> Dataset``. Add an entry to register your own data set.
DATASETS: dict[str, Callable[[DataSpec], Dataset]] = {
    "digits": digits.load_digits,
    "cifar10": cifar10.load_cifar10,
    "ptb": text.load_ptb,
    "synthetic-text": synthetic_text.load_synthetic_text,
}

#: Name -> the ``spec.options`` keys its loader understands. :func:`load` rejects any other key
#: (a misspelt option would otherwise be silently ignored). Data sets absent from this dict
#: check their own options.
OPTIONS: dict[str, frozenset[str]] = {
    "digits": digits.OPTIONS,
    "cifar10": cifar10.OPTIONS,
    "ptb": text.OPTIONS,
    "synthetic-text": synthetic_text.OPTIONS,
}

#: Data sets for which ``spec.augment=True`` means something (random crop + flip).
AUGMENTABLE = frozenset({"cifar10"})


def names() -> list[str]:
    """Names of the registered data sets, sorted."""
    return sorted(DATASETS)


def load(spec: DataSpec) -> Dataset:
    """Load the data set that ``spec`` names.

    Args:
        spec: which data set, where its files are, subsets, sequence length and options.

    Returns:
        The :class:`Dataset` (train/test tensors, task, classes, optional augmentation).

    Raises:
        LossurfError: unknown name, unknown option, ``augment`` on a data set without
            augmentation, or missing/malformed files; for a user's factory, an import path
            that does not resolve, a factory that raises, or data that fail the checks.
    """
    if is_import_path(spec.name):
        return load_user(spec)
    loader = DATASETS.get(spec.name)
    if loader is None:
        raise LossurfError(
            f"unknown data set {spec.name!r}; choose one of {names()} (data: name: ...), or "
            "your own factory as 'package.module:load'"
        )
    allowed = OPTIONS.get(spec.name)
    if allowed is not None:
        unknown = sorted(set(spec.options) - allowed)
        if unknown:
            valid = sorted(allowed) or "none"
            raise LossurfError(
                f"unknown option(s) {unknown} for data set {spec.name!r}; valid options: {valid}"
            )
    if spec.augment and spec.name in OPTIONS and spec.name not in AUGMENTABLE:
        raise LossurfError(
            f"data set {spec.name!r} has no augmentation; set augment: false "
            f"(augmentation exists for {sorted(AUGMENTABLE)})"
        )
    return loader(spec)
