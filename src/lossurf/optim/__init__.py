"""Optimizers: the paper's base methods and their Runge-Kutta augmentation (paper A.2, A.3).

Build any registered optimizer by name::

    from lossurf import optim
    opt = optim.build("adam+rk2-heun", model.parameters(), lr=2e-3)
    opt.step(closure)   # RK forms need a closure: they evaluate the gradient twice
"""

from lossurf.optim.registry import OPTIMIZERS, RK_OPTIONS, OptimizerEntry, build, names, parse_name
from lossurf.optim.runge_kutta import (
    MINIBATCH_MODES,
    TABLEAUS,
    RungeKutta,
    Tableau,
    resolve_tableau,
)

__all__ = [
    "OPTIMIZERS",
    "RK_OPTIONS",
    "OptimizerEntry",
    "build",
    "names",
    "parse_name",
    "MINIBATCH_MODES",
    "TABLEAUS",
    "RungeKutta",
    "Tableau",
    "resolve_tableau",
]
