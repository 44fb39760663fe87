"""Figure kinds ``surface`` (Figs. 2, 3, 8) and ``pair_grid`` (the paper's Table 1).

A ``surface`` figure has two panels: the 3-D surface the paper draws and a filled contour of
the same values with the anchors labelled (the contour is the one that reads without rotating).
Clipped points are black crosses on the 3-D surface and hatched cells on the contour.

The ``pair_grid`` overview is an NxN grid. Lower triangle: the barycentric surface over
(init, A, B) as a *filled contour* on one colour scale shared by every cell -- at 4-7 methods a
cell is ~1.5 in wide, where a 3-D projection is unreadable -- so cells compare directly (a wide
dark basin is a wide basin). Upper triangle: functional distance from A along the line to B
(solid, left axis) and label disagreement (dashed, right axis). Diagonal: the method's name.
Pairs also get their own readable figure (a :class:`~lossurf.plots.base.Part`: 3-D surface,
contour, distances): the pairs listed in ``data["detail_pairs"]`` (``["a|b", ...]``), by default
every pair for up to 4 methods and, beyond, the pairs of the first method (the paper's SGD
against each other method) -- 21 static 3-D figures for 7 methods would cost the demo minutes.
Every pair's 3-D surface is in the one interactive plotly scene, chosen with a dropdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.base import Drawing, Part, Plane, load_plane, open_store, require
from lossurf.plots.base import surface_values
from lossurf.plots.clip import clip_note, clip_values
from lossurf.plots.interactive import surface_fragment
from lossurf.plots.style import CLIP_COLOR, axis_label, color_for, new_figure, style

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["draw_surface", "draw_pair_grid"]

_CMAP = "viridis"
_FDIST_COLOR, _DISAGREE_COLOR = "#000000", "#e6550d"


def _norm(planes: list[Plane]):
    from matplotlib.colors import Normalize

    finite = np.concatenate([p.values[np.isfinite(p.values)] for p in planes])
    low = float(finite.min()) if finite.size else 0.0
    high = max(max(p.ceiling for p in planes), low + 1e-12)
    return Normalize(vmin=low, vmax=high)


def _draw_3d(ax, plane: Plane, norm) -> None:
    import matplotlib

    z = np.where(np.isfinite(plane.values), plane.values, np.nan)
    ax.plot_surface(plane.first, plane.second, np.ma.masked_invalid(z),
                    cmap=matplotlib.colormaps[_CMAP], norm=norm, linewidth=0,
                    antialiased=True, rcount=60, ccount=60)
    if plane.count:
        m = plane.clipped
        ax.scatter(plane.first[m], plane.second[m], plane.values[m], marker="x",
                   color=CLIP_COLOR, s=25, depthshade=False)
    ax.set_xlabel(axis_label(plane.dims[0]), labelpad=6)
    ax.set_ylabel(axis_label(plane.dims[1]), labelpad=6)
    ax.set_zlabel(axis_label(plane.var), labelpad=6)
    ax.view_init(elev=30, azim=-135)


def _draw_contour(ax, plane: Plane, norm, *, labels: bool = True, levels: int = 14):
    filled = ax.contourf(plane.first, plane.second, np.ma.masked_invalid(plane.values),
                         levels=np.linspace(norm.vmin, norm.vmax, levels + 1), cmap=_CMAP,
                         norm=norm, extend="neither")
    if plane.count:
        ax.contourf(plane.first, plane.second, plane.clipped.astype(float), levels=[0.5, 1.5],
                    colors="none", hatches=["xxx"])
    if labels:
        for label, a, b in plane.anchors:
            ax.plot(a, b, "o", color="white", mec="black", ms=7, zorder=5)
            ax.annotate(label, (a, b), xytext=(6, 6), textcoords="offset points",
                        fontsize=10, zorder=6,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8})
    ax.grid(False)
    return filled


def _surface_figure(plane: Plane, line=None):
    """One plane: 3-D surface (left) and labelled filled contour (right); with ``line``
    (``(alphas, {fdist, disagreement})``) a third, wide panel below with the distances."""
    norm = _norm([plane])
    fig = new_figure(10.5, 4.4 if line is None else 7.4)
    grid = fig.add_gridspec(1 if line is None else 2, 2,
                            height_ratios=None if line is None else [4.4, 2.6])
    ax3 = fig.add_subplot(grid[0, 0], projection="3d")
    _draw_3d(ax3, plane, norm)
    ax = fig.add_subplot(grid[0, 1])
    filled = _draw_contour(ax, plane, norm)
    ax.set_xlabel(axis_label(plane.dims[0]))
    ax.set_ylabel(axis_label(plane.dims[1]))
    bar = fig.colorbar(filled, ax=ax)
    bar.set_label(axis_label(plane.var) + (" (clipped ×)" if plane.count else ""))
    if line is not None:
        below = fig.add_subplot(grid[1, :])
        _draw_distances(below, line[0], line[1], small=False)
        below.set_title("along the line from A to B", fontsize=11)
    return fig


def draw_surface(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Draw a ``surface`` figure (see :mod:`lossurf.experiments.result` for its data)."""
    require(spec.data, spec, "surface")
    var = spec.data.get("var", "loss")
    plane = load_plane(result, spec.data["surface"], var, labels=spec.data.get("corner_labels"),
                       name=spec.title or spec.key)
    with style():
        fig = _surface_figure(plane)
    html = surface_fragment([plane], f"{result.recipe}-{spec.key}-3d")
    notes = [clip_note(plane.count, plane.ceiling)] if plane.count else []
    return Drawing(figure=fig, clipped={spec.key: plane.count}, notes=notes, html=html)


def _lookup(table: dict, a: str, b: str) -> tuple[str | None, bool]:
    """The path stored for pair (a, b) and whether it was found as (b, a)."""
    if f"{a}|{b}" in table:
        return table[f"{a}|{b}"], False
    if f"{b}|{a}" in table:
        return table[f"{b}|{a}"], True
    return None, False


def _distances(result: "RecipeResult", relative: str):
    ds = open_store(result, relative)
    dim = next(iter(ds.dims)) if "alpha" not in ds.dims else "alpha"
    xs = np.asarray(ds[dim].values, np.float64)
    out = {}
    for var in ("fdist", "disagreement"):
        if var in ds.data_vars:
            values, missing = surface_values(ds, var, relative)
            out[var] = clip_values(values.ravel(), missing=missing.ravel())
    if "fdist" not in out:
        raise LossurfError(f"distance store {relative} has no 'fdist'; compute it with a reference")
    return xs, out


def _draw_distances(ax, xs, values, *, small: bool) -> int:
    """fdist on ``ax``, disagreement on a twin axis; returns the number of clipped points."""
    count = 0
    fd = values["fdist"]
    ax.plot(xs, fd.values, color=_FDIST_COLOR, label="functional distance (left axis)")
    count += fd.count
    ax.set_ylim(bottom=0)
    if "disagreement" in values:
        dis = values["disagreement"]
        twin = ax.twinx()
        twin.plot(xs, dis.values, color=_DISAGREE_COLOR, ls="--",
                  label="label disagreement (right axis)")
        twin.set_ylim(0, max(1e-3, float(np.nanmax(dis.values)) * 1.1))
        twin.tick_params(axis="y", colors=_DISAGREE_COLOR)
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        if small:
            twin.locator_params(axis="y", nbins=3)
        else:
            twin.set_ylabel(axis_label("disagreement"), color=_DISAGREE_COLOR)
        count += dis.count
    if small:
        ax.locator_params(axis="both", nbins=3)
    else:
        ax.set_xlabel("α (from A to B)")
        ax.set_ylabel(axis_label("fdist"))
    return count


def _detailed(data: dict, methods: list[str], a: str, b: str) -> bool:
    """Whether pair (a, b) gets its own static figure (see the module docstring)."""
    wanted = data.get("detail_pairs")
    if wanted is not None:
        return f"{a}|{b}" in wanted or f"{b}|{a}" in wanted
    return len(methods) <= 4 or methods[0] in (a, b)


def draw_pair_grid(spec: "FigureSpec", result: "RecipeResult") -> Drawing:
    """Draw the ``pair_grid`` overview and one figure per pair."""
    require(spec.data, spec, "methods")
    methods = [str(m) for m in spec.data["methods"]]
    surfaces, distances = spec.data.get("surfaces", {}), spec.data.get("distances", {})
    n = len(methods)
    if n < 2:
        raise LossurfError(f"figure {spec.key!r} needs at least 2 methods, got {methods}")
    planes: dict[tuple[int, int], Plane] = {}
    for i in range(n):
        for j in range(i):
            path, _ = _lookup(surfaces, methods[j], methods[i])
            if path is not None:
                planes[(i, j)] = load_plane(result, path, "loss",
                                            name=f"{methods[j]} vs {methods[i]}")
    # one ceiling and one colour scale for every cell, so that cells compare directly
    if planes:
        raw = {}
        for (i, j) in planes:
            path, _ = _lookup(surfaces, methods[j], methods[i])
            values, missing = surface_values(open_store(result, path), "loss", path)
            raw[(i, j)] = (path, values[~missing])
        present = np.concatenate([v for _, v in raw.values()])
        ceiling = clip_values(present).ceiling if present.size else None
        for key, plane in list(planes.items()):
            planes[key] = load_plane(result, raw[key][0], "loss", ceiling=ceiling, name=plane.name)
    lines = {}
    for i in range(n):
        for j in range(i + 1, n):
            path, _ = _lookup(distances, methods[i], methods[j])
            if path is not None:
                lines[(i, j)] = _distances(result, path)
    clipped: dict[str, int] = {}
    notes: list[str] = []
    parts: list[Part] = []
    with style():
        cell = 1.6 if n > 4 else 2.1
        fig = new_figure(cell * n + 1.6, cell * n + 0.4)
        axes = fig.subplots(n, n, squeeze=False)
        norm = _norm(list(planes.values())) if planes else None
        filled = None
        for i in range(n):
            for j in range(n):
                ax = axes[i][j]
                if i == j:
                    ax.axis("off")
                    ax.text(0.5, 0.5, methods[i], ha="center", va="center", fontsize=13,
                            weight="bold", color=color_for(methods[i]), transform=ax.transAxes)
                elif i > j and (i, j) in planes:
                    plane = planes[(i, j)]
                    filled = _draw_contour(ax, plane, norm, labels=False, levels=10)
                    ax.locator_params(axis="both", nbins=3)
                    clipped[plane.name] = plane.count
                elif i < j and (i, j) in lines:
                    xs, values = lines[(i, j)]
                    clipped[f"{methods[i]} to {methods[j]} distances"] = _draw_distances(
                        ax, xs, values, small=True)
                else:
                    ax.axis("off")
                    ax.text(0.5, 0.5, "not computed", ha="center", va="center", fontsize=10,
                            color="0.5", transform=ax.transAxes)
                if i != n - 1 and ax.axison:
                    ax.tick_params(labelbottom=False)
        if filled is not None:
            bar = fig.colorbar(filled, ax=axes, location="right", shrink=0.6)
            hatched = any(p.count for p in planes.values())
            bar.set_label("loss (lower triangle" + ("; hatched = clipped)" if hatched else ")"))
        from matplotlib.lines import Line2D

        fig.legend(
            [Line2D([], [], color=_FDIST_COLOR), Line2D([], [], color=_DISAGREE_COLOR, ls="--")],
            ["functional distance (upper, left axis)", "label disagreement (upper, right axis)"],
            loc="outside upper center", ncols=2,
        )
        fig.supxlabel("lower: α (init at 0, the A–B edge at 1) · upper: α along the line "
                      "from A to B", fontsize=11)
        fig.supylabel("lower: β (B = row at 0, A = column at 1)", fontsize=11)
        for (i, j), plane in planes.items():
            a, b = methods[j], methods[i]
            if not _detailed(spec.data, methods, a, b):
                continue
            title = f"{a} and {b}: loss over (init, {a}, {b})"
            line = lines.get((j, i))
            if line is not None:
                title += f"; functional distance and disagreement from {a} to {b}"
            parts.append(Part(suffix=f"{a}-{b}", title=title,
                              figure=_surface_figure(plane, line)))
    total = sum(clipped.values())
    if total:
        notes.append(clip_note(total, max(p.ceiling for p in planes.values())
                               if planes else float("nan")))
    html = None
    if planes:
        html = surface_fragment(list(planes.values()), f"{result.recipe}-{spec.key}-3d")
    return Drawing(figure=fig, clipped=clipped, notes=notes, html=html, parts=parts)
