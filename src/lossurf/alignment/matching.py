"""Weight matching (Ainsworth, Hayase & Srinivasa 2022, "Git Re-Basin", Algorithm 1).

Find the permutation ``P`` of ``B``'s hidden units that maximizes the inner product
``sum_k <A_k, (P B)_k>`` over the model's parameters, i.e. that brings ``B`` as close to ``A``
as a permutation can (``||A - P B||^2 = ||A||^2 + ||B||^2 - 2 <A, P B>``). Coordinate descent:
for each group in a seeded random order, hold the other groups fixed and solve the linear
assignment problem ``max_p sum_i C[i, p[i]]`` with ``C = sum_axes A_axis B_axis^T``
(``scipy.optimize.linear_sum_assignment``); repeat until a whole pass improves nothing.

The objective uses the parameters only (weights, biases, batch-norm scale and shift):
running statistics are permuted with their layer but do not vote, as in the paper.
Everything is computed in float64 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lossurf.alignment.permutations import (
    Axis,
    PermutationSpec,
    _permute_axis,
    identity_permutation,
)
from lossurf.params import StateDict

__all__ = ["MatchResult", "weight_matching", "inner_product"]

#: Improvement below which a group's new assignment is not taken (float64 noise on sums).
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class MatchResult:
    """The permutation found and how the search went.

    Attributes:
        permutation: group name -> LongTensor; apply it to ``B`` to bring it to ``A``.
        objective_before: ``<A, B>`` over the parameters (identity permutation).
        objective_after: ``<A, P B>`` with the permutation found.
        iterations: passes over the groups, the last one (without improvement) included.
        converged: a pass improved nothing before ``max_iter`` passes.
    """

    permutation: dict[str, torch.Tensor]
    objective_before: float
    objective_after: float
    iterations: int
    converged: bool


def inner_product(a: StateDict, b: StateDict, keys: Sequence[str]) -> float:
    """``sum_k <a[k], b[k]>`` over ``keys`` in float64."""
    return float(sum(float((a[k].double() * b[k].double()).sum()) for k in keys))


def _unit_rows(tensor: torch.Tensor, axis: Axis, units: int) -> torch.Tensor:
    """``[units, -1]``: row ``i`` holds every entry of ``tensor`` that belongs to unit ``i``."""
    shape = tensor.shape
    blocks = tensor.reshape(*shape[: axis.dim], units, axis.block, *shape[axis.dim + 1:])
    return blocks.movedim(axis.dim, 0).reshape(units, -1)


def weight_matching(
    spec: PermutationSpec,
    a: StateDict,
    b: StateDict,
    keys: Sequence[str],
    *,
    seed: int = 0,
    max_iter: int = 100,
) -> MatchResult:
    """Permutation of ``b``'s hidden units that maximizes ``<a, P b>`` over ``keys``.

    Args:
        spec: the model's groups (:func:`~lossurf.alignment.permutations.permutation_spec`).
        a: the reference state dict (stays fixed).
        b: the state dict to permute.
        keys: the tensors the objective sums over (the model's parameters); axes on other
            keys are permuted by :func:`apply_permutation` but do not vote.
        seed: seeds the random order of the groups in each pass.
        max_iter: most passes over the groups.

    Returns:
        A :class:`MatchResult`.
    """
    voting = set(keys)
    a64 = {k: a[k].detach().to("cpu", torch.float64) for k in voting}
    b64 = {k: b[k].detach().to("cpu", torch.float64) for k in voting}
    by_key = spec.axes_by_key()
    perm = identity_permutation(spec)
    rng = np.random.default_rng(seed)
    iterations, converged = 0, not spec.groups
    while iterations < max_iter and spec.groups:
        iterations += 1
        improved = False
        for index in rng.permutation(len(spec.groups)):
            group = spec.groups[int(index)]
            cost = torch.zeros(group.size, group.size, dtype=torch.float64)
            for axis in group.axes:
                if axis.key not in voting:
                    continue
                other = b64[axis.key]
                for name, other_axis in by_key[axis.key]:
                    if name != group.name:  # the other groups' current permutations
                        other = _permute_axis(other, other_axis, perm[name])
                rows_a = _unit_rows(a64[axis.key], axis, group.size)
                rows_b = _unit_rows(other, axis, group.size)
                cost += rows_a @ rows_b.T
            costs = cost.numpy()
            _, columns = linear_sum_assignment(costs, maximize=True)
            old = float(costs[np.arange(group.size), perm[group.name].numpy()].sum())
            new = float(costs[np.arange(group.size), columns].sum())
            if new > old + _TOLERANCE * max(1.0, abs(old)):
                perm[group.name] = torch.from_numpy(columns).long()
                improved = True
        if not improved:
            converged = True
            break
    key_list = sorted(voting)
    before = inner_product(a64, b64, key_list)
    permuted = dict(b64)
    for group in spec.groups:
        for axis in group.axes:
            if axis.key in voting:
                permuted[axis.key] = _permute_axis(permuted[axis.key], axis, perm[group.name])
    after = inner_product(a64, permuted, key_list)
    return MatchResult(perm, before, after, iterations, converged)
