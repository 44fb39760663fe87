"""Align weight vectors: permute one network's hidden units into another's coordinates.

``align(model, reference, weights)`` returns ``weights`` permuted by weight matching so that it
is as close to ``reference`` as a permutation makes it, computing the same function.
``align_points`` aligns every point of a path or plane after the first to the first and gives
the provenance attrs a surface records (so a store computed with alignment never resumes one
computed without: the anchors, and so their hashes, differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lossurf.alignment.matching import weight_matching
from lossurf.alignment.permutations import apply_permutation, permutation_hash, permutation_spec
from lossurf.errors import LossurfError
from lossurf.params import (StateDict, as_state, check_compatible, check_finite_weights, distance,
                            moving_keys)

__all__ = ["AlignmentInfo", "align", "align_points", "METHOD"]

#: The method named in the attrs of every aligned result.
METHOD = "weight matching (Ainsworth et al. 2022)"


@dataclass(frozen=True)
class AlignmentInfo:
    """What :func:`align` did.

    Attributes:
        model: the model's name.
        groups: hidden units per permuted layer.
        permutation: layer -> permutation (``aligned[i] = weights[p[i]]`` along its units).
        permutation_sha256: hash of the permutation (see ``permutation_hash``).
        objective_before, objective_after: ``<reference, weights>`` over the parameters,
            before and after permuting (weight matching maximizes it).
        distance_before, distance_after: ``||reference - weights||`` over the parameters.
        iterations: coordinate-descent passes; converged: the last pass improved nothing.
        seed: the seed of the layer order.
    """

    model: str
    groups: dict[str, int]
    permutation: dict[str, list[int]]
    permutation_sha256: str
    objective_before: float
    objective_after: float
    distance_before: float
    distance_after: float
    iterations: int
    converged: bool
    seed: int

    def is_identity(self) -> bool:
        """Whether no unit moved."""
        return all(p == list(range(len(p))) for p in self.permutation.values())


def align(
    model: nn.Module,
    reference_weights: StateDict | nn.Module,
    weights: StateDict | nn.Module,
    seed: int = 0,
    *,
    max_iter: int = 100,
) -> tuple[dict[str, torch.Tensor], AlignmentInfo]:
    """Permute ``weights`` into the coordinates of ``reference_weights`` by weight matching.

    Args:
        model: the architecture (only traced, never modified or run).
        reference_weights: the fixed end point (A).
        weights: the end point to permute (B).
        seed: seeds the order in which layers are matched.
        max_iter: most coordinate-descent passes (default 100).

    Returns:
        ``(aligned, info)``: ``aligned`` is a new state dict computing the same function as
        ``weights`` (batch-norm running statistics permuted too); ``info`` an
        :class:`AlignmentInfo`.

    Raises:
        LossurfError: the model cannot be aligned (an LSTM, a branching model; the message
            says why), or the weights are not of this model.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LossurfError(f"alignment seed must be an integer, got {seed!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise LossurfError(f"max_iter must be a positive integer, got {max_iter!r}")
    spec = permutation_spec(model)
    a, b = as_state(reference_weights), as_state(weights)
    check_compatible([as_state(model), a, b], ["the model", "reference", "weights"])
    check_finite_weights(a, "reference_weights")
    check_finite_weights(b, "weights")
    keys = moving_keys(model)
    found = weight_matching(spec, a, b, keys, seed=seed, max_iter=max_iter)
    aligned = apply_permutation(b, spec, found.permutation)
    aligned = {k: (v if v is not b[k] else v.clone()) for k, v in aligned.items()}
    info = AlignmentInfo(
        model=spec.model,
        groups={g.name: g.size for g in spec.groups},
        permutation={k: [int(i) for i in v] for k, v in found.permutation.items()},
        permutation_sha256=permutation_hash(found.permutation),
        objective_before=found.objective_before,
        objective_after=found.objective_after,
        distance_before=distance(a, b, keys),
        distance_after=distance(a, aligned, keys),
        iterations=found.iterations,
        converged=found.converged,
        seed=seed,
    )
    return aligned, info


def align_points(
    model: nn.Module, points: Sequence[StateDict], seed: int = 0
) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
    """Align every point after the first to the first; return them and provenance attrs.

    Returns:
        ``(points, attrs)``: the first point unchanged, the others aligned; attrs
        ``alignment`` (the method), ``alignment_reference`` (0, the first point),
        ``alignment_seed``, and one entry per aligned point in
        ``alignment_permutation_sha256``, ``alignment_objective_before/after``,
        ``alignment_distance_before/after``, ``alignment_iterations``.
    """
    states = [as_state(p) for p in points]
    out = [states[0]]
    infos = []
    for state in states[1:]:
        aligned, info = align(model, states[0], state, seed)
        out.append(aligned)
        infos.append(info)
    attrs: dict[str, Any] = {
        "alignment": METHOD,
        "alignment_reference": 0,
        "alignment_seed": seed,
        "alignment_permutation_sha256": [i.permutation_sha256 for i in infos],
        "alignment_objective_before": [i.objective_before for i in infos],
        "alignment_objective_after": [i.objective_after for i in infos],
        "alignment_distance_before": [i.distance_before for i in infos],
        "alignment_distance_after": [i.distance_after for i in infos],
        "alignment_iterations": [i.iterations for i in infos],
    }
    return out, attrs
