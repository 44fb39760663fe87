"""Figure kinds ``curves`` (per-epoch metrics: Figs. 4, 7, 9, 12-15), ``bars`` and ``matrix``.

``curves``: one panel per metrics column, one line per run, coloured by method; series of
different groups (initializations, batch norm on/off) differ by line style. A diverged run has
NaN losses from its last epoch on: that epoch is drawn at the panel's ceiling with a cross.

``bars``: one cluster per label, one bar per group (hatched differently), coloured by method.

``matrix``: a long-format table pivoted into a square heatmap with the values written in the
cells; non-finite cells are hatched and read "clipped".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.base import Drawing, read_metrics, read_table, require
from lossurf.plots.clip import clip_note, clip_values
from lossurf.plots.lines import panel_grid
from lossurf.plots.style import CLIP_COLOR, axis_label, color_for, new_figure, series_style, style

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["draw_curves", "draw_bars", "draw_matrix"]

_STYLES = ["-", "--", ":", "-."]
_HATCHES = ["", "//", "..", "xx", "\\\\", "++"]


def _column(frame, name: str, where: str) -> np.ndarray:
    if name not in frame.columns:
        raise LossurfError(f"{where} has no column {name!r}; it has {list(frame.columns)}")
    return np.asarray(frame[name].to_numpy(), dtype=np.float64)


def _legend(fig, handles: dict) -> None:
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right center")


def draw_curves(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Draw a ``curves`` figure (see :mod:`lossurf.experiments.result` for its data)."""
    from matplotlib.lines import Line2D

    require(spec.data, spec, "series", "columns")
    x_name = spec.data.get("x", "epoch")
    columns = list(spec.data["columns"])
    series = spec.data["series"]
    groups = list(dict.fromkeys(str(s.get("group", "")) for s in series))
    frames = [(s, read_metrics(result, s["experiment"], s["run"])) for s in series]
    rows, cols = panel_grid(len(columns), max_columns=2 if len(columns) == 4 else 3)
    clipped: dict[str, int] = {}
    notes: list[str] = []
    handles: dict = {}
    with style():
        fig = new_figure(3.1 * cols + 2.2, 2.9 * rows + 0.3)
        axes = fig.subplots(rows, cols, squeeze=False)
        for index, column in enumerate(columns):
            ax = axes[index // cols][index % cols]
            loaded = []
            for s, frame in frames:
                where = f"metrics of run {s['run']!r}"
                loaded.append((s, _column(frame, x_name, where), _column(frame, column, where)))
            present = np.concatenate([v for _, _, v in loaded])
            # accuracies are bounded; only unbounded columns (losses, perplexities) get clipped
            bounded = "accuracy" in column
            ceiling = None if bounded or not present.size else clip_values(present).ceiling
            for s, xs, values in loaded:
                label = str(s["label"])
                group = str(s.get("group", ""))
                # seeds, switch points and BN fix the style; otherwise the group picks it
                look = series_style(label, group)
                look_kw = look.kwargs(len(xs), _STYLES[groups.index(group) % len(_STYLES)])
                name = f"{label} ({group})" if group else label
                if bounded:
                    ax.plot(xs, values, **look_kw)
                    count = 0
                else:
                    c = clip_values(values, ceiling=ceiling)
                    shown = np.where(c.clipped, np.nan, c.values)
                    ax.plot(xs, shown, **look_kw)
                    count = c.count
                    if count:
                        ax.plot(xs[c.clipped], c.values[c.clipped], "x", color=CLIP_COLOR,
                                ms=8, mew=2)
                        notes.append(f"{name}, {column}: " + clip_note(count, c.ceiling))
                        handles["diverged / clipped"] = Line2D([], [], ls="", marker="x",
                                                               color=CLIP_COLOR, mew=2)
                clipped[f"{name}/{column}"] = count
                handles.setdefault(name, Line2D([], [], **{k: v for k, v in look_kw.items()
                                                           if k != "markevery"}))
            ax.set_xlabel(axis_label(x_name))
            ax.set_ylabel(axis_label(column))
        for index in range(len(columns), rows * cols):
            axes[index // cols][index % cols].set_visible(False)
        # the clip marker last in the legend, after the methods
        marker = handles.pop("diverged / clipped", None)
        if marker is not None:
            handles["diverged / clipped"] = marker
        _legend(fig, handles)
    return Drawing(figure=fig, clipped=clipped, notes=notes)


def draw_bars(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Draw a ``bars`` figure: a value per label, one bar per group."""
    from matplotlib.patches import Patch

    require(spec.data, spec, "table", "label", "value")
    frame = read_table(result, spec.data["table"])
    where = f"table {spec.data['table']!r}"
    label_col, value_col, group_col = spec.data["label"], spec.data["value"], spec.data.get("group")
    for name in (label_col, value_col) + ((group_col,) if group_col else ()):
        if name not in frame.columns:
            raise LossurfError(f"{where} has no column {name!r}; it has {list(frame.columns)}")
    labels = list(dict.fromkeys(frame[label_col].astype(str)))
    groups = list(dict.fromkeys(frame[group_col].astype(str))) if group_col else [""]
    c = clip_values(_column(frame, value_col, where))
    frame = frame.assign(_value=c.values, _clipped=c.clipped)
    width = 0.8 / len(groups)
    handles: dict = {}
    with style():
        fig = new_figure(min(11.0, 1.0 + 0.75 * len(labels) * max(1, len(groups) * 0.6)) + 1.6,
                         3.8)
        ax = fig.subplots()
        for g, group in enumerate(groups):
            rows = frame if not group_col else frame[frame[group_col].astype(str) == group]
            for _, row in rows.iterrows():
                x = labels.index(str(row[label_col])) + (g - (len(groups) - 1) / 2) * width
                color = color_for(str(row[label_col]))
                ax.bar(x, row["_value"], width=width * 0.95, color=color, edgecolor="black",
                       linewidth=0.6, hatch=_HATCHES[g % len(_HATCHES)])
                if row["_clipped"]:
                    ax.plot(x, row["_value"], "x", color=CLIP_COLOR, ms=10, mew=2)
            if group_col:
                handles[f"{group_col} = {group}"] = Patch(facecolor="white", edgecolor="black",
                                                          hatch=_HATCHES[g % len(_HATCHES)])
        if c.count:
            from matplotlib.lines import Line2D

            handles["clipped (divergent)"] = Line2D([], [], ls="", marker="x", color=CLIP_COLOR,
                                                    mew=2)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 5 else 0,
                      ha="right" if len(labels) > 5 else "center")
        ax.set_ylabel(axis_label(value_col))
        ax.grid(axis="x", visible=False)
        _legend(fig, handles)
    notes = [clip_note(c.count, c.ceiling)] if c.count else []
    return Drawing(figure=fig, clipped={spec.key: c.count}, notes=notes)


def draw_matrix(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Draw a ``matrix`` figure: a long-format table as an annotated square heatmap."""
    require(spec.data, spec, "table", "value", "row", "col")
    frame = read_table(result, spec.data["table"])
    where = f"table {spec.data['table']!r}"
    row_col, col_col, value_col = spec.data["row"], spec.data["col"], spec.data["value"]
    for name in (row_col, col_col, value_col):
        if name not in frame.columns:
            raise LossurfError(f"{where} has no column {name!r}; it has {list(frame.columns)}")
    names = list(dict.fromkeys(list(frame[row_col].astype(str)) + list(frame[col_col].astype(str))))
    index = {name: i for i, name in enumerate(names)}
    grid = np.full((len(names), len(names)), np.nan)
    present = np.zeros(grid.shape, bool)
    for r, col, v in zip(frame[row_col].astype(str), frame[col_col].astype(str),
                         _column(frame, value_col, where)):
        grid[index[r], index[col]] = v
        present[index[r], index[col]] = True
    c = clip_values(grid, missing=~present)
    with style():
        size = min(9.0, 1.6 + 0.75 * len(names))
        fig = new_figure(size + 1.4, size)
        ax = fig.subplots()
        image = ax.imshow(np.ma.masked_invalid(c.values), cmap="magma_r")
        for i in range(len(names)):
            for j in range(len(names)):
                if not present[i, j]:
                    continue
                text = "clipped" if c.clipped[i, j] else f"{grid[i, j]:.3g}"
                shade = image.norm(c.values[i, j]) if np.isfinite(c.values[i, j]) else 0
                ax.text(j, i, text, ha="center", va="center", fontsize=10,
                        color="white" if shade > 0.55 else "black")
                if c.clipped[i, j]:
                    ax.add_patch(_hatched_cell(i, j))
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel(axis_label(col_col))
        ax.set_ylabel(axis_label(row_col))
        ax.grid(False)
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label(axis_label(value_col))
    notes = [clip_note(c.count, c.ceiling)] if c.count else []
    return Drawing(figure=fig, clipped={spec.key: c.count}, notes=notes)


def _hatched_cell(i: int, j: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", edgecolor=CLIP_COLOR,
                     linewidth=0)
