"""Analyses of computed surfaces: basin widths, barriers, and the paper's claims."""

from lossurf.analysis.basins import barrier, basin_width, excess_variation

__all__ = ["basin_width", "barrier", "excess_variation"]
