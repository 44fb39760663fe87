"""Pieces of the HTML report that are not drawing: what the run was (:mod:`.context`) and
which figures need drawing again (:mod:`.cache`). :mod:`lossurf.report` assembles the page."""
