"""Analyses of computed surfaces: basin widths, barriers, bumps, run outcomes, and the paper's
claims."""

from lossurf.analysis.basins import (
    Basin,
    barrier,
    basin_extent,
    basin_width,
    bump_prominences,
    count_bumps,
    excess_variation,
)
from lossurf.analysis.training import Outcome, mean_accuracy_at_evaluations, training_outcome

__all__ = ["Basin", "basin_extent", "basin_width", "barrier", "bump_prominences", "count_bumps",
           "excess_variation", "Outcome", "training_outcome", "mean_accuracy_at_evaluations"]
