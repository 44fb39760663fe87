"""What a recipe leaves on disk: the contract between recipes (compute) and the report (plots).

A recipe writes data only: experiment directories (``lossurf train`` layout), surface zarr
stores, CSV tables, and ``OUT/<recipe>/result.json`` describing them. The report reads those
files and draws every figure; recipes never import matplotlib (DESIGN: compute writes data,
plots read data). Paths inside a result are relative to the recipe's directory.

``result.json``::

    {
      "recipe": "optimizers", "title": "...", "section": "4.1", "preset": "digits",
      "wall_time": 12.3,
      "experiments": {"main": "experiments/main"},
      "tables": {"distances": "tables/distances.csv"},
      "measurements": {"barrier/sgd|adam": 0.8, ...},
      "figures": [FigureSpec, ...]
    }

A :class:`FigureSpec` names a figure ``kind`` the report knows how to draw, and its data:

``lines``       1-D profiles. data: ``{"series": [{"label", "surface", "group"?}], "x": "alpha" |
                "lambda", "var": "loss" | "accuracy" | ..., "panels_by": "group" | null}``;
                one panel per group when ``panels_by`` is ``"group"``.
``surface``     one 2-D surface (barycentric, bilinear or affine zarr store). data:
                ``{"surface", "var": "loss", "corner_labels": [...]}``; drawn as a 3-D surface
                (PNG/PDF) and an interactive plotly surface in the report.
``pair_grid``   the paper's Table 1. data: ``{"methods": [...], "surfaces": {"a|b": path},
                "distances": {"a|b": path}}``: lower triangle (a, b) = barycentric surface over
                init, a, b; upper triangle = fdist / disagreement along the line from a to b.
``curves``      per-epoch metrics. data: ``{"series": [{"label", "experiment", "run",
                "group"?}], "columns": ["train_accuracy", ...], "x": "epoch" |
                "gradient_evaluations"}``; one panel per column.
``matrix``      a square table as a heatmap. data: ``{"table", "value": column, "row": column,
                "col": column}`` (long format CSV).
``bars``        a value per label. data: ``{"table", "label": column, "value": column,
                "group": column | null}``.

The "Beyond the paper" kinds (:mod:`lossurf.experiments.beyond`, drawn by
:mod:`lossurf.plots.beyond`):

``trajectory_plane`` a PCA plane with its projected trajectory. data: as ``surface``.
``curve``       loss along a Bezier curve and the straight line. data: ``{"surface"}`` (the
                curve store).
``alignment``   the line between two minima before and after weight matching. data:
                ``{"surface"}`` (the store of :func:`lossurf.alignment.compare_barriers`).
``density``     Hessian eigenvalue densities. data: ``{"folder", "series": [{"label",
                "hessian"}]}``: the Hessian store of each is ``folder/<hessian>.zarr``.
``table``       a CSV table drawn as a table. data: ``{"table"}``.

``OUT/claims.json`` (written after all recipes, see :mod:`lossurf.analysis.claims`) lists
:class:`Claim` records: the paper's claim, the quantity that tests it, the paper's number and
the value measured here side by side, the threshold, and whether it held (or why it cannot be
decided), all computed from the data, never written by hand. ``OUT/training.json`` lists every
run of every recipe with its outcome (trained, did not train, diverged) and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lossurf.errors import LossurfError
from lossurf.runs import read_json, write_json

__all__ = ["FigureSpec", "RecipeResult", "Claim", "FIGURE_KINDS"]

FIGURE_KINDS = ("lines", "surface", "pair_grid", "curves", "matrix", "bars",
                "trajectory_plane", "curve", "alignment", "density", "table")


@dataclass
class FigureSpec:
    """One figure to draw: a paper figure key (``fig5a``), a kind and its data."""

    key: str
    title: str
    caption: str
    kind: str
    data: dict[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f"unknown figure kind {self.kind!r}; one of {FIGURE_KINDS}")


@dataclass
class RecipeResult:
    """Everything one recipe produced (paths relative to ``root``)."""

    recipe: str
    title: str
    section: str
    preset: str
    root: Path
    wall_time: float = 0.0
    experiments: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    figures: list[FigureSpec] = field(default_factory=list)

    def save(self) -> Path:
        """Write ``root/result.json`` atomically."""
        payload = asdict(self)
        payload.pop("root")
        path = self.root / "result.json"
        write_json(path, payload)
        return path

    @classmethod
    def load(cls, root: str | Path) -> "RecipeResult":
        """Read ``root/result.json``."""
        root = Path(root)
        payload = read_json(root / "result.json")
        payload["figures"] = [FigureSpec(**f) for f in payload.get("figures", [])]
        return cls(root=root, **payload)

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in this result."""
        return self.root / relative


@dataclass
class Claim:
    """One claim of the paper and what this run measured for it.

    ``paper`` is the paper's own number (or what it shows, where it gives none), next to
    ``measured`` (ours) and ``threshold`` (the rule that turns ours into ``held``). ``held`` is
    None when the claim was not tested (its recipe did not run) or the data cannot decide it
    (inconclusive); ``reason`` then says why, and otherwise notes what the verdict rests on
    (e.g. a run that never trained).
    """

    number: int
    claim: str
    quantity: str
    measured: str
    held: bool | None  # None: not tested, or inconclusive (see reason)
    recipe: str
    values: dict[str, Any] = field(default_factory=dict)
    paper: str = ""
    threshold: str = ""
    reason: str = ""

    @staticmethod
    def save_all(claims: list["Claim"], path: Path) -> None:
        write_json(path, [asdict(c) for c in claims])

    @staticmethod
    def load_all(path: Path) -> list["Claim"]:
        """Read ``claims.json``; a damaged file is one :class:`LossurfError` naming the fix."""
        fix = ("delete it and run the same `lossurf run ...` or `lossurf demo` command again: "
               "finished recipes are reused and the claims are recomputed from their data")
        records = read_json(Path(path), fix, expect=list)
        try:
            return [Claim(**record) for record in records]
        except TypeError:  # an item that is not a mapping of Claim's fields
            raise LossurfError(f"{path} is corrupted (not a list of claim records); {fix}") from None
