"""Loss along a low-loss curve against the straight line between the same end points.

Reads the Dataset of :func:`lossurf.curves.curve_surface` (``loss``, ``accuracy`` along the
curve, ``loss_line``, ``accuracy_line`` along the line, over ``t``) and draws one panel per
metric: the curve solid, the line dashed, each curve's maximum loss marked. Divergent values
are clipped and marked as in every other figure (:mod:`lossurf.plots.clip`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.clip import clip_note, clip_values
from lossurf.plots.style import CLIP_COLOR, axis_label, new_figure, style

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

__all__ = ["draw_curve", "CURVE_COLOR", "LINE_COLOR"]

CURVE_COLOR, LINE_COLOR = "#1f6fb4", "#7f7f7f"


def draw_curve(ds: "xr.Dataset", title: str | None = None) -> tuple["Figure", list[str]]:
    """Figure of loss (and accuracy) along the curve and along the straight line.

    Args:
        ds: a curve Dataset (dim ``t``; ``loss`` and ``loss_line`` at least).
        title: the figure's title (default: the kind and the end points from attrs).

    Returns:
        ``(figure, notes)``; the notes say what was clipped.
    """
    if "t" not in ds.dims or "loss" not in ds or "loss_line" not in ds:
        raise LossurfError("not a curve Dataset (it needs dim 't' and variables 'loss', "
                           "'loss_line'); compute it with lossurf.curves.curve_surface")
    names = [n for n in ("loss", "accuracy", "perplexity") if n in ds and f"{n}_line" in ds]
    t = np.asarray(ds["t"].values, np.float64)
    kind = str(ds.attrs.get("curve_kind", "curve"))
    ends = ds.attrs.get("curve_end_points") or [str(v) for v in ds.attrs.get("anchor_labels", [])][::2]
    notes: list[str] = []
    with style():
        fig = new_figure(4.2 * len(names) + 0.4, 3.4)
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, name in zip(axes, names):
            for var, color, ls, label in ((name, CURVE_COLOR, "-", f"{kind} curve"),
                                          (f"{name}_line", LINE_COLOR, "--", "straight line")):
                c = clip_values(np.asarray(ds[var].values, np.float64))
                shown = np.where(c.clipped, np.nan, c.values)
                ax.plot(t, shown, ls, color=color, label=label)
                if c.count:
                    ax.plot(t[c.clipped], c.values[c.clipped], "x", color=CLIP_COLOR, ms=7, mew=2)
                    notes.append(f"{var}: " + clip_note(c.count, c.ceiling))
                if name == "loss" and np.isfinite(shown).any():  # the path's barrier
                    i = int(np.nanargmax(shown))
                    ax.plot(t[i], shown[i], "o", color=color, ms=5)
            ax.set_xlabel("t (position along the path)")
            ax.set_ylabel(axis_label(name))
        axes[0].legend(loc="best")
        if title is None and len(ends) == 2:
            title = f"{kind} curve vs straight line: {ends[0]} (t = 0) to {ends[1]} (t = 1)"
        if title:
            fig.suptitle(title)
    return fig, notes
