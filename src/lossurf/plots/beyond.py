"""Drawers of the "Beyond the paper" figure kinds (:mod:`lossurf.experiments.beyond`).

``trajectory_plane`` (a PCA plane with the projected trajectory), ``curve`` (a Bezier curve
against the straight line), ``alignment`` (a line before and after weight matching),
``density`` (Hessian eigenvalue densities, each a store ``FOLDER/<name>.zarr``) and ``table`` (a CSV table drawn as a table). Each
reads the stores its spec names and reuses the drawing of the module that owns that store's
kind; none computes anything beyond reshaping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.base import Drawing, open_store, read_table, require
from lossurf.plots.style import color_for, new_figure, style

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["BEYOND_DRAWERS", "draw_trajectory_plane", "draw_curve_spec", "draw_alignment_spec",
           "draw_density", "draw_table"]


def draw_trajectory_plane(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """The ``surface`` figure of a PCA plane with its trajectory on the contour panel."""
    from lossurf.plots.surfaces import draw_surface
    from lossurf.plots.trajectory import draw_trajectory

    drawing = draw_surface(spec, result)
    if not draw_trajectory(drawing.figure, open_store(result, spec.data["surface"])):
        raise LossurfError(f"surface {spec.data['surface']} has no projected trajectory; it is "
                           "not a PCA plane (compute it with lossurf.surface.pca_plane)")
    return drawing


def draw_curve_spec(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Loss along a curve store against the straight line (:func:`plots.curves_bezier.draw_curve`)."""
    from lossurf.plots.curves_bezier import draw_curve

    require(spec.data, spec, "surface")
    figure, notes = draw_curve(open_store(result, spec.data["surface"]))
    return Drawing(figure=figure, notes=notes)


def draw_alignment_spec(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """The raw and the aligned line of an alignment store (:mod:`lossurf.plots.alignment`)."""
    from lossurf.alignment.compare import split_comparison
    from lossurf.plots.alignment import draw_alignment_barrier

    require(spec.data, spec, "surface")
    ds = open_store(result, spec.data["surface"])
    if "aligned" not in ds.dims:
        raise LossurfError(f"surface {spec.data['surface']} is not an alignment store (no "
                           "'aligned' dim); compute it with lossurf.alignment.compare_barriers")
    return Drawing(figure=draw_alignment_barrier(split_comparison(ds)))


def draw_density(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Hessian eigenvalue densities, one line per series, on a log scale."""
    from lossurf import hessian

    require(spec.data, spec, "folder", "series")
    folder = result.path(spec.data["folder"])
    with style():
        fig = new_figure(7.5, 3.8)
        ax = fig.subplots()
        for entry in spec.data["series"]:
            path = folder / f"{entry['hessian']}.zarr"
            if not path.exists():
                raise LossurfError(f"Hessian store {path} does not exist; run the "
                                   f"{result.recipe!r} recipe again to compute it")
            ds = hessian.load(path)
            if "density" not in ds:
                raise LossurfError(f"Hessian store {path} has no density; run the "
                                   f"{result.recipe!r} recipe again")
            x = np.asarray(ds["eigenvalue"].values, np.float64)
            y = np.asarray(ds["density"].values, np.float64)
            # the density spans many decades; a floor keeps the log axis readable
            ax.semilogy(x, np.maximum(y, 1e-6 * max(float(y.max()), 1e-300)),
                        color=color_for(entry["label"]), label=entry["label"])
        ax.set_xlabel("Hessian eigenvalue")
        ax.set_ylabel("density (log)")
        ax.legend(loc="best")
    return Drawing(figure=fig)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "-" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def draw_table(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """A CSV table drawn as a table (header row shaded)."""
    require(spec.data, spec, "table")
    frame = read_table(result, spec.data["table"])
    if frame.empty:
        raise LossurfError(f"table {spec.data['table']} has no rows; run the {result.recipe!r} "
                           "recipe again")
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    columns = [str(c) for c in frame.columns]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    with style():
        fig = new_figure(min(12.0, 0.6 + 0.11 * sum(w + 2 for w in widths)),
                         0.6 + 0.32 * (len(cells) + 1))
        ax = fig.subplots()
        ax.axis("off")
        table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="left",
                         colWidths=[w / sum(widths) for w in widths])
        table.auto_set_font_size(False)
        table.set_fontsize(10)
        table.scale(1.0, 1.3)
        for (row, _), cell in table.get_celld().items():
            if row == 0:
                cell.set_facecolor("#f3f3f3")
                cell.set_text_props(weight="bold")
    return Drawing(figure=fig)


#: Figure kind -> drawer, merged into :data:`lossurf.plots.draw.DRAWERS`.
BEYOND_DRAWERS = {
    "trajectory_plane": draw_trajectory_plane,
    "curve": draw_curve_spec,
    "alignment": draw_alignment_spec,
    "density": draw_density,
    "table": draw_table,
}
