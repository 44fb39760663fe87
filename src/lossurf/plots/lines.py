"""Figure kind ``lines``: 1-D loss profiles along lines and basins (paper Figs. 5, 6, 10, 11).

One panel per group (``panels_by: "group"``) or one panel for all series; each series is a
1-D zarr store over ``alpha`` (line) or ``lambda`` (basin, distance in weight space).
Divergent values are clipped per panel at a common ceiling and marked with black crosses.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.base import Drawing, open_store, require, surface_values
from lossurf.plots.clip import clip_note, clip_values
from lossurf.plots.style import CLIP_COLOR, axis_label, new_figure, series_style, style

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["draw_lines", "panel_grid"]

#: Landmarks drawn as thin vertical lines: the end points of a line.
_LANDMARKS = {"alpha": (0.0, 1.0)}


def panel_grid(count: int, max_columns: int = 3) -> tuple[int, int]:
    """``(rows, columns)`` for ``count`` panels, at most ``max_columns`` wide."""
    columns = min(max(count, 1), max_columns)
    return math.ceil(max(count, 1) / columns), columns


def _coordinate(ds, x: str, path: str) -> np.ndarray:
    if x not in ds.coords:
        raise LossurfError(f"surface {path} has no coordinate {x!r}; it has {list(ds.coords)}")
    return np.asarray(ds[x].values, np.float64)


def draw_lines(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Draw a ``lines`` figure (see :mod:`lossurf.experiments.result` for its data)."""
    data = spec.data
    require(data, spec, "series")
    x_name = data.get("x", "alpha")
    var = data.get("var", "loss")
    by_group = data.get("panels_by") == "group"
    panels: dict[str, list[dict]] = {}
    for series in data["series"]:
        key = str(series.get("group", "")) if by_group else ""
        panels.setdefault(key, []).append(series)
    rows, columns = panel_grid(len(panels))
    clipped: dict[str, int] = {}
    notes: list[str] = []
    with style():
        fig = new_figure(3.2 * columns + 2.0, 2.9 * rows + 0.3)
        axes = fig.subplots(rows, columns, squeeze=False, sharey=False)
        any_clipped = False
        for index, (group, members) in enumerate(panels.items()):
            ax = axes[index // columns][index % columns]
            loaded = []
            for series in members:
                ds = open_store(result, series["surface"])
                xs = _coordinate(ds, x_name, series["surface"])
                values, missing = surface_values(ds, var, series["surface"])
                loaded.append((series, xs, values.ravel(), missing.ravel()))
            # one ceiling per panel so the series of a panel share their scale
            present = np.concatenate([v[~m] for _, _, v, m in loaded])
            ceiling = clip_values(present).ceiling if present.size else None
            for series, xs, values, missing in loaded:
                label = str(series["label"])
                look = series_style(label, str(series.get("group", "")))
                c = clip_values(values, missing=missing, ceiling=ceiling)
                # the line breaks at clipped points: only the marks show where they were
                shown = np.where(c.clipped, np.nan, c.values)
                # the legend names the BN variant when only the panel title would say it
                legend = (f"{label} (without BN)" if look.hollow and "bn" not in label.lower()
                          else label)
                ax.plot(xs, shown, label=legend, **look.kwargs(len(xs)))
                if c.count:
                    any_clipped = True
                    ax.plot(xs[c.clipped], c.values[c.clipped], "x", color=CLIP_COLOR,
                            markersize=7, mew=2, label="_clipped")
                name = f"{group}/{label}" if group else label
                clipped[name] = clipped.get(name, 0) + c.count
                if c.count:
                    notes.append(f"{name}: " + clip_note(c.count, c.ceiling))
            # the anchors' positions, where the lines reach them (a short probe around
            # alpha = 0 is not stretched out to alpha = 1)
            low = min(float(np.min(xs)) for _, xs, _, _ in loaded)
            high = max(float(np.max(xs)) for _, xs, _, _ in loaded)
            for landmark in _LANDMARKS.get(x_name, ()):
                if low <= landmark <= high:
                    ax.axvline(landmark, color="0.6", lw=0.8, ls=":", zorder=0)
            if group:
                ax.set_title(group)
            ax.set_xlabel(axis_label(x_name))
            if index % columns == 0:
                ax.set_ylabel(axis_label(var))
        for index in range(len(panels), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        _legend(fig, axes, any_clipped)
    return Drawing(figure=fig, clipped=clipped, notes=notes)


def _legend(fig, axes, any_clipped: bool) -> None:
    """One legend for the whole figure, outside the data, each label once."""
    from matplotlib.lines import Line2D

    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if any_clipped:
        seen["clipped (divergent)"] = Line2D([], [], ls="", marker="x", color=CLIP_COLOR, mew=2)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right center")
