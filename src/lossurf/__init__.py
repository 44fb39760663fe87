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


def train_experiment(*args, **kwargs):
    """Train an experiment; see :func:`lossurf.engine.train_experiment`."""
    from lossurf.engine import train_experiment as _train

    return _train(*args, **kwargs)


__all__ = ["__version__", "LossurfError", "Experiment", "load_experiment", "train_experiment"]
