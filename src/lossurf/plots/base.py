"""What every figure drawer shares: the :class:`Drawing` it returns and the data loaders.

Drawers take a :class:`~lossurf.experiments.result.FigureSpec` and the recipe's
:class:`~lossurf.experiments.result.RecipeResult`, read the files the spec names (zarr surface
stores, per-run metrics CSVs, long-format tables) and return matplotlib figures; they never
write files (``draw`` does) and never compute anything beyond reshaping and clipping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossurf.errors import LossurfError

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["Drawing", "Part", "Plane", "load_plane", "open_store", "surface_values",
           "read_metrics", "read_table", "require"]


@dataclass
class Part:
    """An extra figure of a drawing (e.g. one pair of the Table 1 grid), saved as its own files."""

    suffix: str
    title: str
    figure: "Figure"


@dataclass
class Drawing:
    """A drawer's output: the main figure, clipped-point counts and optional extras.

    Attributes:
        figure: the main matplotlib figure.
        clipped: clipped points per drawn series or surface (label -> count).
        notes: caption sentences to add (what was clipped, what is missing).
        html: an interactive plotly fragment (a ``<div>`` and an inline script), or None.
        parts: further figures saved next to the main one.
    """

    figure: "Figure"
    clipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    html: str | None = None
    parts: list[Part] = field(default_factory=list)


def require(data: dict[str, Any], spec: "FigureSpec", *keys: str) -> None:
    """Fail with a clear message when a figure spec lacks data keys."""
    absent = [k for k in keys if k not in data]
    if absent:
        raise LossurfError(
            f"figure {spec.key!r} ({spec.kind}) lacks data {absent}; the recipe that wrote "
            "result.json must name them (see lossurf.experiments.result)"
        )


def open_store(result: "RecipeResult", relative: str) -> "xr.Dataset":
    """Open a surface zarr store named in a result, loaded into memory."""
    path = result.path(relative)
    if not path.exists():
        raise LossurfError(
            f"surface store {path} does not exist; run the {result.recipe!r} recipe again to "
            "compute it"
        )
    from lossurf.surface.store import open_surface

    return open_surface(path)  # verified chunks; a broken store is one LossurfError


def surface_values(ds: "xr.Dataset", var: str, path: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(values, missing)`` of one variable: float64 values and the not-computed mask."""
    if var not in ds.data_vars:
        have = [v for v in ds.data_vars if v != "computed"]
        raise LossurfError(f"surface {path or ''} has no variable {var!r}; it has {have}")
    values = np.asarray(ds[var].values, dtype=np.float64)
    if "computed" in ds.data_vars:
        missing = ~np.asarray(ds["computed"].values, dtype=bool)
    else:
        missing = np.zeros(values.shape, bool)
    return values, missing


def read_metrics(result: "RecipeResult", experiment: str, run: str) -> "pd.DataFrame":
    """A run's per-epoch ``metrics.csv`` (layout of :mod:`lossurf.runs`)."""
    import pandas as pd

    from lossurf.runs import ExperimentLayout

    root = result.path(result.experiments.get(experiment, experiment))
    path = ExperimentLayout(root).metrics(run)
    if not path.is_file():
        raise LossurfError(
            f"run {run!r} of {root} has no metrics.csv; train it (run the {result.recipe!r} "
            "recipe again)"
        )
    return pd.read_csv(path)


def read_table(result: "RecipeResult", table: str) -> "pd.DataFrame":
    """A CSV table named in a result (by its key in ``tables`` or by relative path)."""
    import pandas as pd

    path: Path = result.path(result.tables.get(table, table))
    if not path.is_file():
        raise LossurfError(
            f"table {path} does not exist; run the {result.recipe!r} recipe again to write it"
        )
    return pd.read_csv(path)


@dataclass
class Plane:
    """A 2-D surface ready to draw: grid coordinates, clipped values and labelled anchors.

    Attributes:
        name: what the surface shows (for legends and dropdowns).
        dims: the two coordinate names (``alpha, beta`` or ``x, y``).
        first, second: 2-D coordinate arrays (``indexing="ij"``) matching ``values``.
        values: the clipped values (see :mod:`lossurf.plots.clip`); missing points NaN.
        clipped: bool mask of clipped points.
        ceiling: where clipped points are drawn.
        var: the variable's name (``loss``).
        anchors: ``[(label, first, second)]`` positions of the anchors in plane coordinates.
        kind: the store's geometry (``barycentric``, ``bilinear``, ``affine``).
    """

    name: str
    dims: tuple[str, str]
    first: np.ndarray
    second: np.ndarray
    values: np.ndarray
    clipped: np.ndarray
    ceiling: float
    var: str
    anchors: list[tuple[str, float, float]]
    kind: str

    @property
    def count(self) -> int:
        """Number of clipped points."""
        return int(self.clipped.sum())


def _anchor_positions(
    ds: "xr.Dataset", kind: str, labels: list[str]
) -> list[tuple[str, float, float]]:
    attrs = ds.attrs
    if kind == "affine":
        xs = attrs.get("geometry_anchor_x", attrs.get("anchor_x", []))
        ys = attrs.get("geometry_anchor_y", attrs.get("anchor_y", []))
    else:
        xs = attrs.get("geometry_corner_alpha", attrs.get("corner_alpha", []))
        ys = attrs.get("geometry_corner_beta", attrs.get("corner_beta", []))
        if not xs:  # stores written by hand: the grids' documented corners
            xs, ys = ([0.0, 1.0, 1.0], [0.0, 1.0, 0.0]) if len(labels) == 3 else (
                [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0])
    out = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        label = labels[i] if i < len(labels) else f"p{i}"
        if kind == "barycentric" and i == 0:
            # p0 is the whole alpha = 0 edge of a barycentric grid: label its middle
            y, label = 0.5, f"{label} (α = 0)"
        out.append((label, float(x), float(y)))
    return out


def load_plane(
    result: "RecipeResult",
    relative: str,
    var: str = "loss",
    *,
    labels: list[str] | None = None,
    ceiling: float | None = None,
    name: str = "",
) -> Plane:
    """Open a 2-D store and clip it for drawing (see :class:`Plane`)."""
    from lossurf.plots.clip import clip_values

    ds = open_store(result, relative)
    dims = tuple(d for d in ds[var].dims) if var in ds.data_vars else ()
    values, missing = surface_values(ds, var, relative)
    if len(dims) != 2:
        raise LossurfError(
            f"surface {relative} has dims {dims}; a surface figure needs a 2-D store (a plane)"
        )
    kind = str(ds.attrs.get("lossurf_kind", "affine" if dims == ("x", "y") else "barycentric"))
    first, second = np.meshgrid(
        np.asarray(ds[dims[0]].values, np.float64), np.asarray(ds[dims[1]].values, np.float64),
        indexing="ij",
    )
    labels = list(labels or ds.attrs.get("anchor_labels") or ds.attrs.get("anchor_roles") or [])
    c = clip_values(values, missing=missing, ceiling=ceiling)
    return Plane(
        name=name or relative, dims=(dims[0], dims[1]), first=first, second=second,
        values=c.values, clipped=c.clipped, ceiling=c.ceiling, var=var,
        anchors=_anchor_positions(ds, kind, labels), kind=kind,
    )
