"""Draw one figure of a recipe's result to PNG and PDF files: dispatch on the figure kind.

``draw(spec, result, out_dir)`` looks up the kind's drawer in :data:`DRAWERS`, which builds
matplotlib figures from the files the spec names, then saves them as
``<recipe>-<key>.png`` (150 dpi) and ``.pdf``, plus one pair of files per extra part
(``<recipe>-<key>-<suffix>``). The caller gets the paths, the interactive fragment, and how
many points were clipped, so a caption can say so and a test can count them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lossurf.errors import LossurfError
from lossurf.plots.base import Drawing
from lossurf.plots.beyond import BEYOND_DRAWERS
from lossurf.plots.curves import draw_bars, draw_curves, draw_matrix
from lossurf.plots.lines import draw_lines
from lossurf.plots.style import DPI, style
from lossurf.plots.surfaces import draw_pair_grid, draw_surface

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult

__all__ = ["DRAWERS", "DrawnFigure", "DrawnPart", "draw", "figure_stem"]

#: Figure kind -> drawer (kinds of :data:`lossurf.experiments.result.FIGURE_KINDS`).
DRAWERS: dict[str, Callable[["FigureSpec", "RecipeResult"], Drawing]] = {
    "lines": draw_lines,
    "surface": draw_surface,
    "pair_grid": draw_pair_grid,
    "curves": draw_curves,
    "bars": draw_bars,
    "matrix": draw_matrix,
    **BEYOND_DRAWERS,  # the "Beyond the paper" kinds (lossurf.plots.beyond)
}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


@dataclass
class DrawnPart:
    """An extra figure saved next to the main one."""

    title: str
    png: Path
    pdf: Path
    width_in: float


@dataclass
class DrawnFigure:
    """The files of one drawn figure.

    Attributes:
        png, pdf: the main figure's files.
        html_fragment: an interactive plotly fragment, or None.
        clipped: clipped points per series or surface (label -> count).
        notes: caption sentences (what was clipped).
        parts: extra figures (one per pair of a ``pair_grid``).
        width_in: the main figure's width in inches (the report shows 100 px per inch).
    """

    png: Path
    pdf: Path
    html_fragment: str | None = None
    clipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parts: list[DrawnPart] = field(default_factory=list)
    width_in: float = 8.0

    @property
    def clipped_total(self) -> int:
        """All clipped points of the figure."""
        return sum(self.clipped.values())


def figure_stem(recipe: str, key: str) -> str:
    """The file name stem ``<recipe>-<key>`` with unsafe characters replaced."""
    return _UNSAFE.sub("_", f"{recipe}-{key}")


def _save(figure, stem: Path) -> tuple[Path, Path, float]:
    import io

    from lossurf.runs import atomic_write_bytes

    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    with style():
        for path, extra in ((png, {"dpi": DPI}), (pdf, {})):
            # atomic and with the umask's mode: a killed redraw never leaves half a figure
            buffer = io.BytesIO()
            figure.savefig(buffer, format=path.suffix[1:], **extra)
            atomic_write_bytes(path, buffer.getvalue())
    return png, pdf, float(figure.get_size_inches()[0])


def draw(spec: "FigureSpec", result: "RecipeResult", out_dir: str | Path) -> DrawnFigure:
    """Draw one figure of a recipe's result to ``out_dir``.

    Args:
        spec: the figure (its ``kind`` picks the drawer, see :data:`DRAWERS`).
        result: the recipe result whose files the spec names.
        out_dir: where ``<recipe>-<key>.png``/``.pdf`` (and parts) are written.

    Returns:
        A :class:`DrawnFigure` with the paths, the plotly fragment and the clipped counts.

    Raises:
        LossurfError: an unknown kind, or data the spec names is missing or malformed.
    """
    if spec.kind not in DRAWERS:
        raise LossurfError(
            f"figure {spec.key!r} has unknown kind {spec.kind!r}; valid kinds: "
            f"{', '.join(DRAWERS)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawing = DRAWERS[spec.kind](spec, result)
    stem = out / figure_stem(result.recipe, spec.key)
    png, pdf, width = _save(drawing.figure, stem)
    parts = []
    for part in drawing.parts:
        p_png, p_pdf, p_width = _save(part.figure, stem.with_name(
            f"{stem.name}-{_UNSAFE.sub('_', part.suffix)}"))
        parts.append(DrawnPart(part.title, p_png, p_pdf, p_width))
    return DrawnFigure(png=png, pdf=pdf, html_fragment=drawing.html, clipped=drawing.clipped,
                       notes=drawing.notes, parts=parts, width_in=width)
