"""lossurf: train one network with many optimizers from one initialization, then measure and
draw the loss between the weights they reach (Im, Tao & Branson, "An Empirical Analysis of
Deep Network Loss Surfaces").

Public API::

    lossurf.load_experiment(path)   reopen a directory written by `lossurf train`
    lossurf.train_experiment(...)   train an experiment config into a directory
    lossurf.models.build(spec)      build a registered model
    lossurf.optim.build(name, params, lr=...)   any registered optimizer, Runge-Kutta included

Every name but ``__version__`` and ``LossurfError`` is imported on first use (PEP 562), so
``import lossurf`` (and the ``lossurf`` command's ``--help``) does not pay for torch, xarray,
zarr, matplotlib or ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from lossurf.errors import LossurfError  # noqa: E402

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from lossurf import data, models, optim, surface  # noqa: F401
    from lossurf.engine import train_experiment  # noqa: F401
    from lossurf.experiment import Experiment, load_experiment  # noqa: F401
    from lossurf.surface import basin, distance_along, functional_distance, line, plane  # noqa: F401

# Attribute -> module that defines it; imported on first access.
_LAZY = {
    "Experiment": "lossurf.experiment",
    "load_experiment": "lossurf.experiment",
    "train_experiment": "lossurf.engine",
    "line": "lossurf.surface",
    "basin": "lossurf.surface",
    "plane": "lossurf.surface",
    "functional_distance": "lossurf.surface",
    "distance_along": "lossurf.surface",
}
# Subpackages reachable as attributes (`lossurf.models.build`) without an explicit import.
_SUBMODULES = ("data", "models", "optim", "surface")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"lossurf.{name}")
    raise AttributeError(f"module 'lossurf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = ["__version__", "LossurfError", *_LAZY]
