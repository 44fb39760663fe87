"""One table comparing end points: top eigenvalue, trace, epsilon-sharpness, basin width.

The paper's basin width (Fig. 6, claim 5: Adam's basins are wider than SGD's) is read from a
basin surface (loss over absolute distance ``lambda`` from the minimum toward its
initialization), with the rule the reproduction claims use: the basin ends where the loss has
risen by :data:`~lossurf.analysis.basins.BASIN_REL` of the way from the minimum to the
initialization's loss. Sharper minima (larger top eigenvalue, larger epsilon-sharpness) are
expected to be narrower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from lossurf.analysis.basins import BASIN_REL, basin_width

__all__ = ["basin_width_of", "comparison_rows", "format_table"]


def basin_width_of(basin: xr.Dataset) -> tuple[float, bool]:
    """``(width, truncated)`` of a basin surface (dim ``lambda``) in weight-space distance."""
    x = np.asarray(basin["lambda"].values, dtype=float)
    y = np.asarray(basin["loss"].values, dtype=float)
    d = float(basin.attrs.get("geometry_init_distance", x.max()))
    i0, i_init = int(np.argmin(np.abs(x))), int(np.argmin(np.abs(x - d)))
    return basin_width(x, y, max(BASIN_REL * (y[i_init] - y[i0]), 0.0), center=0.0)


def comparison_rows(results: Mapping[str, xr.Dataset],
                    basins: Mapping[str, xr.Dataset | None] | None = None) -> list[dict]:
    """One row per end point: its top eigenvalue, trace, sharpness per eps and basin width.

    Args:
        results: end point label -> its Hessian Dataset (from :func:`lossurf.hessian.analyze`).
        basins: end point label -> its basin surface, if one exists.
    """
    rows = []
    for label, ds in results.items():
        row: dict = {"end point": label}
        if "eigenvalues" in ds:
            row["top eigenvalue"] = float(ds.eigenvalues.values[0])
        if "trace" in ds:
            row["trace"] = float(ds.trace)
        if "eps_sharpness" in ds:
            for eps, value in zip(ds.eps.values, ds.eps_sharpness.values):
                row[f"eps-sharpness({eps:g}) %"] = float(value)
        basin = (basins or {}).get(label)
        if basin is not None:
            width, truncated = basin_width_of(basin)
            row["basin width"] = f"{'>=' if truncated else ''}{width:.4g}"
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Rows as a plain-text table (columns in first-seen order, ``-`` where a value is missing)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)
