"""Draw any surface store (``lossurf plot STORE.zarr``): profiles of lines and basins, planes.

The kind comes from the store: its ``lossurf_kind`` attribute (``line``, ``basin``,
``barycentric``, ``bilinear``, ``affine``; whatever else writes a store with named coords) and,
for stores without it, its dimensionality. 1-D stores get one panel per variable (loss,
accuracy and, where computed, functional distance and disagreement) over their coordinate;
2-D stores get the report's ``surface`` figure (3-D surface and labelled contour of the loss,
:func:`lossurf.plots.surfaces.draw_surface`). Values are clipped and missing points left blank
exactly as in the report (:mod:`lossurf.plots.clip`).

The output format follows the file's extension: ``.png`` and ``.pdf`` through matplotlib with
the report's style, ``.html`` a self-contained plotly page (plotly.js inlined; it opens
offline). Files are written atomically.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.clip import clip_note, clip_values
from lossurf.plots.lines import panel_grid
from lossurf.plots.style import CLIP_COLOR, DPI, axis_label, color_for, new_figure, style

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["plot_store", "FORMATS", "store_kind"]

#: Output formats by file extension.
FORMATS = {".png": "png", ".pdf": "pdf", ".html": "html", ".htm": "html"}
#: 1-D variables drawn, in panel order (others the store has follow).
_PROFILE_VARS = ("loss", "accuracy", "perplexity", "fdist", "disagreement")


def store_kind(ds: "xr.Dataset") -> tuple[str, tuple[str, ...]]:
    """``(kind, dims)`` of a surface Dataset: its ``lossurf_kind`` or one from its dims."""
    if "loss" in ds.data_vars:
        dims = tuple(ds["loss"].dims)
    else:
        dims = tuple(next((ds[v].dims for v in ds.data_vars if v != "computed"), ()))
    default = {1: "basin" if dims == ("lambda",) else "line",
               2: "affine" if dims == ("x", "y") else "plane"}.get(len(dims), "")
    return str(ds.attrs.get("lossurf_kind") or default), dims


def _labels(ds: "xr.Dataset") -> list[str]:
    return [str(v) for v in (ds.attrs.get("anchor_labels") or ds.attrs.get("anchor_roles") or [])]


def _title(path: Path, ds: "xr.Dataset", kind: str) -> str:
    labels = _labels(ds)
    joined = ", ".join(labels)
    if kind == "line" and len(labels) == 2:
        return f"line from {labels[0]} (α = 0) to {labels[1]} (α = 1)"
    if kind == "basin" and len(labels) == 2:
        return f"basin of {labels[0]} toward {labels[1]}"
    return f"{kind} surface" + (f" over ({joined})" if joined else "") + f": {path.name}"


def _profile(ds: "xr.Dataset", dim: str, label: str):
    """1-D figure: one panel per variable, clipped like the report's ``lines`` figures."""
    from matplotlib.lines import Line2D

    names = [n for n in _PROFILE_VARS if n in ds.data_vars]
    names += sorted(n for n in ds.data_vars if n not in names and n != "computed")
    xs = np.asarray(ds[dim].values, np.float64)
    missing = (~np.asarray(ds["computed"].values, bool) if "computed" in ds.data_vars
               else np.zeros(xs.shape, bool))
    rows, columns = panel_grid(len(names), max_columns=2)
    notes: list[str] = []
    with style():
        fig = new_figure(3.6 * columns + 1.0, 2.9 * rows + 0.6)
        axes = fig.subplots(rows, columns, squeeze=False)
        any_clipped = False
        for index, name in enumerate(names):
            ax = axes[index // columns][index % columns]
            c = clip_values(np.asarray(ds[name].values, np.float64), missing=missing)
            ax.plot(xs, np.where(c.clipped, np.nan, c.values), color=color_for(label))
            if c.count:
                any_clipped = True
                ax.plot(xs[c.clipped], c.values[c.clipped], "x", color=CLIP_COLOR, ms=7, mew=2)
                notes.append(f"{name}: " + clip_note(c.count, c.ceiling))
            if dim == "alpha":
                for landmark in (0.0, 1.0):
                    ax.axvline(landmark, color="0.6", lw=0.8, ls=":", zorder=0)
            ax.set_xlabel(axis_label(dim))
            ax.set_ylabel(axis_label(name))
        for index in range(len(names), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        handles = [Line2D([], [], color=color_for(label))]
        if any_clipped:
            handles.append(Line2D([], [], ls="", marker="x", color=CLIP_COLOR, mew=2))
        fig.legend(handles, [label] + (["clipped (divergent)"] if any_clipped else []),
                   loc="outside upper center", ncols=2)
    return fig, notes


@dataclass
class _OneStore:
    """What the report's drawers read of a recipe result, for one store beside ``root``."""

    root: Path
    recipe: str = "plot"

    def path(self, relative: str) -> Path:
        return self.root / relative


def _plane(path: Path, kind: str):
    """2-D figure and plotly fragment: the report's ``surface`` drawer on this one store."""
    from lossurf.plots.surfaces import draw_surface

    spec = SimpleNamespace(key=path.stem, title=f"{kind} surface {path.name}", kind="surface",
                           data={"surface": path.name, "var": "loss"})
    drawing = draw_surface(spec, _OneStore(path.parent))  # type: ignore[arg-type]
    return drawing.figure, drawing.notes, drawing.html


def _profile_html(ds: "xr.Dataset", dim: str, label: str, title: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [n for n in _PROFILE_VARS if n in ds.data_vars]
    names += sorted(n for n in ds.data_vars if n not in names and n != "computed")
    missing = (~np.asarray(ds["computed"].values, bool) if "computed" in ds.data_vars
               else np.zeros(ds[dim].shape, bool))
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    xs = np.asarray(ds[dim].values, np.float64).tolist()
    for row, name in enumerate(names, start=1):
        c = clip_values(np.asarray(ds[name].values, np.float64), missing=missing)
        shown = [None if (m or not np.isfinite(v)) else float(v)
                 for v, m in zip(np.where(c.clipped, np.nan, c.values), c.missing)]
        fig.add_trace(go.Scatter(x=xs, y=shown, mode="lines+markers", name=f"{label}: {name}",
                                 line={"color": color_for(label)}), row=row, col=1)
        if c.count:
            fig.add_trace(go.Scatter(x=np.asarray(xs)[c.clipped].tolist(),
                                     y=c.values[c.clipped].tolist(), mode="markers",
                                     marker={"symbol": "x", "color": "black", "size": 9},
                                     name=f"{name} clipped at {c.ceiling:.4g}"), row=row, col=1)
        fig.update_yaxes(title_text=axis_label(name), row=row, col=1)
    fig.update_xaxes(title_text=axis_label(dim), row=len(names), col=1)
    fig.update_layout(template="none", title={"text": title}, height=260 * len(names) + 120,
                      font={"size": 13})
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id="lossurf-profile",
                       config={"displaylogo": False, "responsive": True})


def _page(title: str, body: str, notes: list[str], ds: "xr.Dataset") -> str:
    from lossurf.plots.interactive import plotly_bundle

    keep = ("lossurf_kind", "anchor_labels", "anchor_checkpoints", "data", "bn", "geometry",
            "lossurf_version", "torch_version")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(ds.attrs[k]))}</td></tr>"
                   for k in keep if k in ds.attrs)
    caption = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return "\n".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto}"
        "th{text-align:left;padding-right:1em}</style>",
        f"<script>{plotly_bundle()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>", body, caption, f"<table>{rows}</table>",
        "</body></html>",
    ])


def plot_store(store: str | Path, out: str | Path | None = None) -> Path:
    """Draw a surface store to a PNG, PDF or HTML file.

    Args:
        store: a zarr store written by ``lossurf surface``, a recipe or the Python API.
        out: the figure's path; its extension picks the format (``.png``, ``.pdf``,
            ``.html``). Default: the store's name with ``.png``, next to it.

    Returns:
        The path written.

    Raises:
        LossurfError: an unknown extension, a missing or unreadable store, a store with no
            computed points or with more than two dimensions.
    """
    from lossurf.surface.store import open_surface

    store = Path(store)
    target = Path(out) if out is not None else store.with_suffix(".png")
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise LossurfError(
            f"cannot write {target}: unknown figure format {target.suffix or '(no extension)'!r}; "
            "give --out a name ending in .png, .pdf or .html"
        )
    ds = open_surface(store)
    kind, dims = store_kind(ds)
    done = np.asarray(ds["computed"].values, bool) if "computed" in ds.data_vars else None
    if done is not None and not done.any():
        raise LossurfError(
            f"surface store {store} has no computed points; run the surface command that "
            "writes it (again) to compute them"
        )
    if len(dims) not in (1, 2):
        raise LossurfError(
            f"surface store {store} has dims {dims}; lossurf plot draws 1-D (line, basin) and "
            "2-D (plane) stores"
        )
    title = _title(store, ds, kind)
    labels = _labels(ds)
    label = " → ".join(labels) if len(labels) == 2 else (labels[-1] if labels else store.stem)
    fragment = None
    if kind.startswith("curve-") and "loss_line" in ds.data_vars:  # a curve vs the straight line
        from lossurf.plots.curves_bezier import draw_curve

        figure, notes = draw_curve(ds)
        if fmt == "html":
            fragment = _profile_html(ds, dims[0], label, title)
    elif len(dims) == 1:
        figure, notes = _profile(ds, dims[0], label)
        if fmt == "html":
            fragment = _profile_html(ds, dims[0], label, title)
    else:
        figure, notes, fragment = _plane(store, kind)
        from lossurf.plots.trajectory import draw_trajectory

        draw_trajectory(figure, ds)  # PCA planes: the projected training trajectory
    if done is not None and not done.all():
        notes.append(f"{int((~done).sum())} of {done.size} points are not computed (blank); "
                     "run the surface command again to complete them")
    with style():
        figure.suptitle(title)  # a file on its own names what it shows
    if fmt == "html":
        data = _page(title, fragment or "", notes, ds).encode()
    else:
        buffer = io.BytesIO()
        with style():
            figure.savefig(buffer, format=fmt, dpi=DPI)
        data = buffer.getvalue()
    from lossurf.runs import atomic_write_bytes

    atomic_write_bytes(target, data)
    return target
