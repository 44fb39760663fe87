"""PCA directions of a training trajectory (Li et al. 2018, section 7).

Given checkpoints ``theta_0 .. theta_n`` (``theta_n`` final), Li et al. apply PCA to the matrix
``M = [theta_0 - theta_n; ...; theta_{n-1} - theta_n]`` and draw the loss on the plane of the
top two directions through ``theta_n``, with the trajectory projected onto it.

What "PCA" means here, decided: by default **no centering** -- the top right singular vectors
of ``M`` itself (``torch.linalg.svd`` in float64), the plane through ``theta_n`` that best fits
the differences in least squares. That is the plane the figure draws (the final weights at the
origin), and a trajectory lying on a plane through ``theta_n`` is recovered exactly. Li et al.'s
released code calls scikit-learn's ``PCA``, which subtracts the rows' mean first; ``center=True``
does that (same directions and explained-variance ratios as ``sklearn.decomposition.PCA``).
Either way the trajectory's coordinates are the projections of the *uncentered* differences,
``M @ [e1, e2]``, as in Li et al.'s code, so ``theta_n`` sits at (0, 0).

The explained-variance ratio of direction ``i`` is ``s_i^2 / sum_j s_j^2`` over all singular
values of the (centered or not) matrix: the fraction of ``|M|_F^2`` it captures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lossurf.errors import LossurfError

__all__ = ["PCAResult", "trajectory_pca"]

#: A second singular value below this fraction of the first means the trajectory spans a line:
#: float32 checkpoints carry a relative rounding of about 1e-7, so collinear ones give a ratio
#: near 1e-7, not 0 (1e-10 let them through as a plane whose y axis is rounding noise).
RANK_TOLERANCE = 1e-5


@dataclass(frozen=True)
class PCAResult:
    """Top-2 principal directions of a trajectory.

    Attributes:
        directions: ``[2, n]`` float64, orthonormal rows ``e1, e2``.
        explained_variance_ratio: ``[2]`` fraction of ``|M|_F^2`` each direction captures.
        singular_values: every singular value of the (centered or not) matrix, descending.
        coordinates: ``[T, 2]`` projections of each row of ``M`` (uncentered) onto ``e1, e2``.
        centered: whether the rows' mean was subtracted before the SVD.
    """

    directions: torch.Tensor
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    coordinates: np.ndarray
    centered: bool


def trajectory_pca(differences: torch.Tensor, *, center: bool = False) -> PCAResult:
    """Top two principal directions of the rows of ``differences`` (``theta_t - theta_final``).

    Args:
        differences: ``[T, n]`` matrix, one row per checkpoint (the final one excluded: its
            row is zero).
        center: subtract the rows' mean before the SVD (scikit-learn's PCA, Li et al.'s code);
            default False (see the module docstring).

    Returns:
        A :class:`PCAResult`. Each direction's sign is chosen so that the largest-magnitude
        trajectory coordinate along it is positive (deterministic across runs).

    Raises:
        LossurfError: fewer than two rows, non-finite values, or a trajectory that spans
            fewer than two directions.
    """
    m = torch.as_tensor(differences).to("cpu", torch.float64)
    if m.dim() != 2 or m.shape[0] < 2:
        rows = m.shape[0] if m.dim() == 2 else 0
        raise LossurfError(
            f"PCA of a trajectory needs at least two checkpoints besides the final weights, got "
            f"{rows}; train with checkpoint_every: 1 (a checkpoint per epoch)"
        )
    if not bool(torch.isfinite(m).all()):
        raise LossurfError("the trajectory has non-finite weights (a diverged run?); use a run "
                           "whose checkpoints are finite")
    fit = m - m.mean(dim=0, keepdim=True) if center else m
    _, s, vh = torch.linalg.svd(fit, full_matrices=False)
    if s.numel() < 2 or float(s[1]) <= RANK_TOLERANCE * max(float(s[0]), 1e-300):
        raise LossurfError(
            "the trajectory's checkpoints lie on one line through the final weights, so they "
            "define no plane; save more checkpoints (checkpoint_every: 1) or use `surface random`"
        )
    e = vh[:2].clone()
    coords = m @ e.T
    for i in range(2):
        if float(coords[int(torch.argmax(coords[:, i].abs())), i]) < 0:
            e[i] = -e[i]
            coords[:, i] = -coords[:, i]
    power = s.pow(2)
    ratio = (power[:2] / power.sum()).numpy()
    return PCAResult(directions=e, explained_variance_ratio=ratio, singular_values=s.numpy(),
                     coordinates=coords.numpy(), centered=bool(center))
