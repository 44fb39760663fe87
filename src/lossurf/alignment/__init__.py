"""Permutation alignment: weight matching (Ainsworth et al. 2022) before interpolating.

Two networks trained from one initialization may sit in one basin up to a permutation of their
hidden units; aligning the second to the first before drawing the line between them tests
whether a loss barrier is real or only a permutation artefact (the question of paper 4.1).

    aligned, info = lossurf.alignment.align(model, weights_a, weights_b, seed=0)
    spec = lossurf.alignment.permutation_spec(model)     # the groups a permutation moves
    ds = lossurf.alignment.compare_barriers(model, a, b, data)   # line before/after aligning
"""

from __future__ import annotations

from lossurf.alignment.apply import METHOD, AlignmentInfo, align, align_points
from lossurf.alignment.compare import compare_barriers, compare_endpoints
from lossurf.alignment.matching import MatchResult, weight_matching
from lossurf.alignment.permutations import (
    Axis,
    PermutationGroup,
    PermutationSpec,
    apply_permutation,
    identity_permutation,
    invert_permutation,
    permutation_hash,
    permutation_spec,
    random_permutation,
)

__all__ = [
    "METHOD",
    "AlignmentInfo",
    "align",
    "align_points",
    "compare_barriers",
    "compare_endpoints",
    "MatchResult",
    "weight_matching",
    "Axis",
    "PermutationGroup",
    "PermutationSpec",
    "apply_permutation",
    "identity_permutation",
    "invert_permutation",
    "permutation_hash",
    "permutation_spec",
    "random_permutation",
]
