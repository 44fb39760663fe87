"""The projected training trajectory over a PCA-plane figure (Li et al. 2018, Fig. 9).

A ``pca`` surface store records, in attrs ``pca_trajectory_x``/``pca_trajectory_y``/
``pca_epochs``, each checkpoint's coordinates on the plane (the final weights at the origin).
:func:`draw_trajectory` draws them as a line with dots, labelled with the first and last
epoch, on the contour panel of a ``surface`` figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["draw_trajectory", "has_trajectory"]


def has_trajectory(ds: "xr.Dataset") -> bool:
    """Whether a surface Dataset carries a projected trajectory."""
    return "pca_trajectory_x" in ds.attrs and "pca_trajectory_y" in ds.attrs


def draw_trajectory(figure, ds: "xr.Dataset") -> bool:
    """Draw the trajectory on the figure's contour panel (its first 2-D axes); False if none."""
    if not has_trajectory(ds):
        return False
    axes = [ax for ax in figure.axes if ax.name == "rectilinear" and ax.get_label() != "<colorbar>"]
    if not axes:
        return False
    ax = axes[0]
    xs = np.asarray(ds.attrs["pca_trajectory_x"], np.float64)
    ys = np.asarray(ds.attrs["pca_trajectory_y"], np.float64)
    epochs = list(ds.attrs.get("pca_epochs") or range(len(xs)))
    ax.plot(xs, ys, "-", color="#d62728", lw=1.6, zorder=7)
    ax.plot(xs, ys, "o", color="#d62728", mec="white", ms=4, zorder=8, label="trajectory")
    for index in (0, len(xs) - 1):
        ax.annotate(f"epoch {epochs[index]}", (xs[index], ys[index]), xytext=(5, -12),
                    textcoords="offset points", fontsize=9, color="#d62728", zorder=9)
    ratio = ds.attrs.get("pca_explained_variance_ratio")
    if ratio is not None and len(ratio) == 2:
        ax.set_xlabel(f"{ax.get_xlabel()} — PC1 {100 * ratio[0]:.1f}%")
        ax.set_ylabel(f"{ax.get_ylabel()} — PC2 {100 * ratio[1]:.1f}%")
    return True
