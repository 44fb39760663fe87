"""Interactive plotly 3-D surfaces as HTML fragments for the report.

A fragment is a ``<div>`` plus an inline ``<script>`` calling ``Plotly.newPlot``; it loads no
script itself: the report inlines plotly.js once (:func:`plotly_bundle`). Several planes go in
one fragment with a dropdown that shows one at a time (the Table 1 grid's lower triangle), so a
report holds a handful of WebGL scenes rather than dozens. Values arrive clipped
(:class:`~lossurf.plots.base.Plane`): clipped points are drawn at the ceiling and marked with
black crosses, missing points are gaps (``null``), so no non-finite number reaches plotly.
"""

from __future__ import annotations

import re

import numpy as np

from lossurf.plots.base import Plane
from lossurf.plots.style import axis_label

__all__ = ["surface_fragment", "plotly_bundle"]

_ID = re.compile(r"[^A-Za-z0-9_-]+")


def plotly_bundle() -> str:
    """The plotly.js source to inline once in a self-contained page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _nullable(values: np.ndarray) -> list:
    """A nested list with NaN replaced by None (JSON null: a gap in the surface)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in values]


def _traces(plane: Plane, visible: bool) -> list:
    import plotly.graph_objects as go

    finite = plane.values[np.isfinite(plane.values)]
    low = float(finite.min()) if finite.size else 0.0
    surface = go.Surface(
        x=plane.first, y=plane.second, z=_nullable(plane.values), name=plane.name,
        colorscale="Viridis", cmin=low, cmax=float(max(plane.ceiling, low + 1e-12)),
        colorbar={"title": {"text": plane.var, "side": "right"}, "thickness": 14, "len": 0.7,
                  "x": 1.0, "xanchor": "right", "xpad": 4}, visible=visible,
        hovertemplate=f"{plane.dims[0]}=%{{x:.3f}}<br>{plane.dims[1]}=%{{y:.3f}}<br>"
                      f"{plane.var}=%{{z:.4g}}<extra></extra>",
    )
    mask = plane.clipped
    marks = go.Scatter3d(
        x=plane.first[mask].tolist(), y=plane.second[mask].tolist(),
        z=plane.values[mask].tolist(), mode="markers", visible=visible,
        marker={"symbol": "x", "size": 4, "color": "black"},
        name=f"clipped at {plane.ceiling:.4g}", showlegend=bool(mask.any()),
    )
    anchors = go.Scatter3d(
        x=[a[1] for a in plane.anchors], y=[a[2] for a in plane.anchors],
        z=[_height(plane, a[1], a[2]) for a in plane.anchors], mode="markers+text",
        text=[a[0] for a in plane.anchors], visible=visible, textfont={"size": 13},
        marker={"size": 5, "color": "white", "line": {"color": "black", "width": 2}},
        name="anchors", showlegend=False,
    )
    return [surface, marks, anchors]


def _height(plane: Plane, a: float, b: float) -> float | None:
    """The surface value at the grid point nearest to an anchor (for its 3-D label)."""
    distance = (plane.first - a) ** 2 + (plane.second - b) ** 2
    value = plane.values.flat[int(np.argmin(distance))]
    return float(value) if np.isfinite(value) else None


def surface_fragment(planes: list[Plane], div_id: str, *, height: int = 560) -> str:
    """An HTML fragment with interactive 3-D surfaces (a dropdown when several).

    Args:
        planes: clipped planes to show; the first is visible initially.
        div_id: a unique id for the ``<div>`` (unsafe characters are replaced).
        height: the plot's height in pixels (default 560).

    Returns:
        ``<div>...</div>`` with an inline script; it needs plotly.js loaded on the page.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    per_plane = []
    for index, plane in enumerate(planes):
        traces = _traces(plane, visible=index == 0)
        per_plane.append(len(traces))
        for trace in traces:
            fig.add_trace(trace)
    first = planes[0]
    # Sized by its box, not by a fixed width: autosize with the responsive config follows the
    # page from 900 px to 1,400 px. The scene leaves the colour bar its strip on the right and
    # the camera stands back far enough that the axis titles stay inside the box.
    fig.update_layout(
        template="none", autosize=True, height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10, "autoexpand": True},
        font={"size": 13},
        scene={"xaxis": {"title": {"text": axis_label(first.dims[0])}},
               "yaxis": {"title": {"text": axis_label(first.dims[1])}},
               "zaxis": {"title": {"text": axis_label(first.var)}},
               "domain": {"x": [0.0, 0.9], "y": [0.0, 1.0]},
               "camera": {"eye": {"x": 1.5, "y": 1.5, "z": 1.0}},
               "aspectmode": "manual", "aspectratio": {"x": 1.0, "y": 1.0, "z": 0.7}},
        legend={"x": 0, "y": 1},
    )
    if len(planes) > 1:
        total, buttons, start = sum(per_plane), [], 0
        for plane, count in zip(planes, per_plane):
            visible = [False] * total
            visible[start:start + count] = [True] * count
            buttons.append({"label": plane.name, "method": "update",
                            "args": [{"visible": visible}]})
            start += count
        fig.update_layout(updatemenus=[{"buttons": buttons, "x": 0, "y": 1.08,
                                        "xanchor": "left", "direction": "down"}])
    safe = _ID.sub("-", div_id)
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=safe, default_height=f"{height}px",
        default_width="100%",
        config={"displaylogo": False, "responsive": True},
    )
