"""Surfaces: loss, accuracy and functional distance over paths and planes in weight space.

Geometry (:mod:`~lossurf.surface.paths`, :mod:`~lossurf.surface.plane`) turns anchor weight
vectors into a :class:`Grid` of affine coefficients; the evaluator computes the metrics at
every grid point; :mod:`~lossurf.surface.store` writes them to resumable zarr stores as
xarray Datasets. The notebook API:

    line(model, start, end, data, range=(-0.5, 2), steps=51)
    basin(model, minimum, init, data)
    plane(model, [init, sgd, adam], data, kind="barycentric" | "bilinear" | "affine")
    functional_distance(model, a, b, data) -> {"fdist", "disagreement"}
    distance_along(model, reference, start, end, data)
    random_plane(model, weights, data, span=1.0, seed=0, normalization="filter")
    random_line(model, weights, data, ...)
    pca_plane(model, [checkpoints..., final], data)  (or pca_plane(model, experiment, data, run="adam"))
    hessian_plane(model, weights, data, ...)
"""

from __future__ import annotations

from lossurf.surface.direction_api import (
    hessian_plane,
    pca_plane,
    random_directions,
    random_line,
    random_plane,
    run_trajectory,
)
from lossurf.surface.direction_store import load_directions
from lossurf.surface.api import basin, distance_along, eval_data, functional_distance, line, plane
from lossurf.surface.paths import Grid, basin_grid, line_grid
from lossurf.surface.plane import affine_basis, affine_grid, barycentric_grid, bilinear_grid
from lossurf.surface.store import compute_surface

__all__ = [
    "line",
    "basin",
    "plane",
    "functional_distance",
    "distance_along",
    "eval_data",
    "Grid",
    "line_grid",
    "basin_grid",
    "bilinear_grid",
    "barycentric_grid",
    "affine_basis",
    "affine_grid",
    "compute_surface",
    "random_plane",
    "random_line",
    "random_directions",
    "pca_plane",
    "run_trajectory",
    "hessian_plane",
    "load_directions",
]
