"""The Hessian of the training loss at an end point: top eigenpairs, trace, eigenvalue density.

Pure computation (:mod:`~lossurf.hessian.hvp`, :mod:`~lossurf.hessian.lanczos`,
:mod:`~lossurf.hessian.trace`, :mod:`~lossurf.hessian.density`,
:mod:`~lossurf.hessian.sharpness`) sits below the notebook API in :mod:`~lossurf.hessian.api`,
which returns xarray Datasets and persists them to resumable zarr stores
(:mod:`~lossurf.hessian.store`). Everything reads the same
:class:`~lossurf.surface.evaluate.EvalData` as the surface evaluator.
"""

from __future__ import annotations

from lossurf.hessian.api import analyze, density, eps_sharpness, top_eigenpairs, trace
from lossurf.hessian.density import slq, spectral_density
from lossurf.hessian.hvp import HessianOperator
from lossurf.hessian.lanczos import lanczos_top
from lossurf.hessian.sharpness import eps_sharpness_of
from lossurf.hessian.store import load
from lossurf.hessian.trace import hutchinson

__all__ = ["analyze", "top_eigenpairs", "trace", "density", "eps_sharpness", "load",
           "HessianOperator", "lanczos_top", "hutchinson", "slq", "spectral_density",
           "eps_sharpness_of"]
