"""Figures of the paper from recipe results: the only package (with :mod:`lossurf.report`)
that imports matplotlib and plotly.

matplotlib is used pyplot-free: figures are ``matplotlib.figure.Figure`` objects saved through
the Agg (PNG) and PDF canvases that ``savefig`` picks per file format, so no backend is selected
globally, and rc settings apply only inside :func:`lossurf.plots.style.style`. Importing this
package changes no plotting state of the caller (a notebook keeps its inline backend).

Public API::

    draw(spec, result, out_dir) -> DrawnFigure      one figure to PNG + PDF (+ plotly fragment)
    color_for(label) -> str                        the fixed colour of a method
    clip_values(values, ...) -> Clipped            clip divergent values for drawing
    surface_fragment(planes, div_id) -> str        interactive 3-D surfaces (HTML)
    plot_store(store, out=None) -> Path            any surface store to PNG, PDF or HTML
"""

from __future__ import annotations

from lossurf.plots.clip import Clipped, clip_values
from lossurf.plots.draw import DRAWERS, DrawnFigure, draw
from lossurf.plots.interactive import plotly_bundle, surface_fragment
from lossurf.plots.store import plot_store
from lossurf.plots.style import OPTIMIZER_COLORS, color_for

__all__ = ["draw", "DrawnFigure", "DRAWERS", "color_for", "OPTIMIZER_COLORS", "clip_values",
           "Clipped", "surface_fragment", "plotly_bundle", "plot_store"]
