"""Data sets: ``load(spec)`` returns a :class:`Dataset` with a fixed, seeded split.

Registered: ``digits`` (embedded, scikit-learn), ``cifar10`` (from ``data_dir``), ``ptb``
(from ``data_dir``), ``synthetic-text`` (generated from a seeded grammar).
"""

from __future__ import annotations

from lossurf.data.base import Augment, Dataset, seeded_subset

__all__ = ["Dataset", "Augment", "seeded_subset", "DATASETS", "load"]

# Filled in by the data-set modules (see the data issue); names map to loader functions
# ``loader(spec: DataSpec) -> Dataset``.
DATASETS: dict = {}


def load(spec):  # placeholder until the loaders land
    raise NotImplementedError
