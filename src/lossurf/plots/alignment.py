"""Figure: the loss between two minima before and after permutation alignment.

Reads the Dataset of :func:`lossurf.alignment.compare_barriers` (``loss_raw``,
``loss_aligned`` over ``alpha``; ``barrier_raw``, ``barrier_aligned`` in attrs) and draws
both curves in one panel: the raw line dashed grey, the aligned line in the second end
point's colour, each barrier in the legend. Divergent values are clipped and marked as in
every other figure.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lossurf.errors import LossurfError
from lossurf.plots.clip import clip_note, clip_values
from lossurf.plots.style import CLIP_COLOR, axis_label, color_for, new_figure, style

__all__ = ["draw_alignment_barrier", "save_alignment_figure"]

_RAW_COLOR = "#7f7f7f"


def _labels(ds) -> tuple[str, str]:
    labels = list(ds.attrs.get("anchor_labels", []))
    if len(labels) >= 2 and labels[:2] != ["start", "end"]:
        return str(labels[0]), str(labels[1])
    return "A", "B"


def draw_alignment_barrier(ds, *, title: str | None = None):
    """A matplotlib ``Figure`` of the raw and the aligned line between two end points.

    Args:
        ds: the Dataset of :func:`lossurf.alignment.compare_barriers` (or
            ``compare_endpoints``).
        title: the panel's title (default ``"A → B: before and after alignment"``).

    Returns:
        A pyplot-free ``matplotlib.figure.Figure``; save it with ``fig.savefig(path)``.

    Raises:
        LossurfError: ``ds`` lacks ``loss_raw``/``loss_aligned`` over ``alpha``.
    """
    missing = [v for v in ("loss_raw", "loss_aligned") if v not in ds]
    if missing or "alpha" not in ds.coords:
        raise LossurfError(
            f"not an alignment comparison (missing {', '.join(missing) or 'alpha'}); pass the "
            "Dataset of lossurf.alignment.compare_barriers"
        )
    first, second = _labels(ds)
    alpha = np.asarray(ds["alpha"].values, np.float64)
    both = np.stack([ds["loss_raw"].values, ds["loss_aligned"].values]).astype(np.float64)
    clipped = clip_values(both)
    series = [
        ("raw", _RAW_COLOR, "--", ds.attrs.get("barrier_raw")),
        ("aligned", color_for(second), "-", ds.attrs.get("barrier_aligned")),
    ]
    with style():
        fig = new_figure(5.6, 3.8)
        ax = fig.subplots()
        for row, (name, color, dash, height) in enumerate(series):
            label = f"{name}" + (f" (barrier {float(height):.3g})" if height is not None else "")
            # The raw line on top: where alignment changed nothing, the curves coincide and
            # the dashes stay visible over the aligned line.
            ax.plot(alpha, clipped.values[row], dash, color=color, label=label, zorder=3 - row)
            marks = clipped.clipped[row]
            if marks.any():
                ax.plot(alpha[marks], clipped.values[row][marks], "x", color=CLIP_COLOR)
        for end in (0.0, 1.0):
            ax.axvline(end, color="#bbbbbb", linewidth=0.8, zorder=0)
        ax.set_xlabel(axis_label("alpha"))
        ax.set_ylabel(axis_label("loss"))
        ax.set_title(title or f"{first} → {second}: before and after alignment")
        ax.legend(loc="best")
        note = clip_note(clipped.count, clipped.ceiling)
        if note:
            fig.text(0.01, -0.02, note, fontsize=9, ha="left", va="top")
    return fig


def save_alignment_figure(ds, path: str | Path) -> Path:
    """Draw :func:`draw_alignment_barrier` to a ``.png`` or ``.pdf`` file, written atomically.

    Raises:
        LossurfError: another file type, or the file cannot be written (the message says why).
    """
    from lossurf.plots.style import DPI
    from lossurf.runs import atomic_write_bytes

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf"):
        raise LossurfError(f"figure file {target} must end in .png or .pdf; rename it")
    figure = draw_alignment_barrier(ds)
    buffer = io.BytesIO()
    with style():
        figure.savefig(buffer, format=fmt, dpi=DPI)
    atomic_write_bytes(target, buffer.getvalue())
    return target
