"""lossurf: train one network with many optimizers from one initialization, then measure and
draw the loss between the weights they reach (Im, Tao & Branson, "An Empirical Analysis of
Deep Network Loss Surfaces").

Public API::

    lossurf.load_experiment(path)   reopen a directory written by `lossurf train`
    lossurf.train_experiment(...)   train an experiment config into a directory
    lossurf.models.build(spec)      build a registered model
    lossurf.optim.build(name, params, lr=...)   any registered optimizer, Runge-Kutta included

Heavy or optional dependencies (xarray, matplotlib, ray) are imported only by the modules that
need them, so ``import lossurf`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

from lossurf.errors import LossurfError  # noqa: E402
from lossurf.experiment import Experiment, load_experiment  # noqa: E402


# Re-exported lazily (PEP 562): the surface functions pull in xarray and zarr.
_LAZY = {
    "train_experiment": "lossurf.engine",
    "line": "lossurf.surface",
    "basin": "lossurf.surface",
    "plane": "lossurf.surface",
    "functional_distance": "lossurf.surface",
    "distance_along": "lossurf.surface",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossurf' has no attribute {name!r}")


__all__ = ["__version__", "LossurfError", "Experiment", "load_experiment", *_LAZY]
