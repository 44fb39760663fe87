"""The barrier between two minima before and after aligning the second to the first.

One grid holds both lines: anchors ``(start, end, end_aligned)``, dims ``aligned`` (0: the raw
line ``(1-a) start + a end``; 1: ``(1-a) start + a end_aligned``) and ``alpha``. It is a
surface like any other (resumable zarr store, provenance attrs); :func:`compare_barriers`
returns it reshaped as ``loss_raw``, ``loss_aligned`` over ``alpha`` with both barriers
(``max(L) - max(L(0), L(1))``) in attrs. This tests the paper's claim that different
optimizers reach different minima (4.1) against the later reading that they share a basin up
to a permutation of hidden units (Entezari et al. 2022; Ainsworth et al. 2022).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from torch import nn

from lossurf.alignment.apply import align_points
from lossurf.analysis.basins import barrier
from lossurf.backends import Backend
from lossurf.params import StateDict, as_state, check_compatible
from lossurf.surface.paths import Grid, check_values
from lossurf.surface.store import compute_surface
from lossurf.threads import threads_for, torch_threads

__all__ = ["comparison_grid", "compare_barriers", "split_comparison", "compare_endpoints"]


def comparison_grid(steps: int = 25) -> Grid:
    """The two lines ``start -> end`` and ``start -> end_aligned`` over alpha in [0, 1]."""
    alphas = check_values(None, (0.0, 1.0), steps, "alpha", landmarks=(0.0, 1.0))
    coefficients = np.zeros((2, alphas.size, 3))
    coefficients[:, :, 0] = 1.0 - alphas
    coefficients[0, :, 1] = alphas
    coefficients[1, :, 2] = alphas
    return Grid(
        kind="alignment-barrier",
        dims=("aligned", "alpha"),
        coords={"aligned": np.array([0.0, 1.0]), "alpha": alphas},
        coefficients=coefficients,
        anchors=("start", "end", "end_aligned"),
    )


def compare_barriers(
    model: nn.Module,
    start: StateDict | nn.Module,
    end: StateDict | nn.Module,
    data: Any,
    *,
    steps: int = 25,
    seed: int = 0,
    bn: str = "recompute",
    split: str = "train",
    subset: int | None = None,
    store: str | Path | None = None,
    device: Any = None,
    attrs: dict | None = None,
    backend: Backend | None = None,
    progress: bool = True,
    **evaluator_options: Any,
) -> xr.Dataset:
    """Loss along ``start -> end`` before and after aligning ``end`` to ``start``.

    Args:
        model: the architecture (never modified).
        start, end: the two minima; ``end`` is aligned to ``start`` by weight matching.
        data: as for :func:`lossurf.surface.line` (EvalData, Dataset, loader or batches).
        steps: alphas in [0, 1] (default 25).
        seed: the matching's seed (also the data subset's seed).
        bn, split, subset, device, backend, progress, evaluator_options: as in
            :func:`lossurf.surface.line`.
        store: zarr store of the two-line grid (resumable); None keeps it in memory.
        attrs: extra provenance (end point labels, runs, files).

    Returns:
        A Dataset over ``alpha`` with ``loss_raw``, ``loss_aligned`` (and ``accuracy_raw``,
        ``accuracy_aligned`` for classifiers); attrs ``barrier_raw``, ``barrier_aligned``,
        the alignment's provenance (permutation hash, objective, distances) and the
        surface's (anchors, data, bn, versions).
    """
    from lossurf.surface.api import eval_data
    from lossurf.surface.evaluate import Evaluator

    from lossurf.devices import api_device

    device = api_device(device)  # before the matching runs
    grid = comparison_grid(steps)
    a, b = as_state(start), as_state(end)
    check_compatible([as_state(model), a, b], ["the model", "start", "end"])
    (a, b_aligned), alignment = align_points(model, [a, b], seed)
    evaluated, described = eval_data(data, split=split, subset=subset, seed=seed)
    evaluator = Evaluator(model, evaluated, bn=bn, device=device, **evaluator_options)
    extra = {"anchor_labels": ["start", "end", "end aligned"], "bn": bn, "data": described,
             **alignment, **(attrs or {})}
    with torch_threads(threads_for(model)):
        surface = compute_surface(evaluator, [a, b, b_aligned], grid, store=store, attrs=extra,
                                  backend=backend, progress=progress)
    return split_comparison(surface)


def split_comparison(surface: xr.Dataset) -> xr.Dataset:
    """The two-line grid as ``VAR_raw``, ``VAR_aligned`` over ``alpha``, barriers in attrs."""
    out = xr.Dataset(coords={"alpha": surface["alpha"].values}, attrs=dict(surface.attrs))
    for name in surface.data_vars:
        values = np.asarray(surface[name].values, np.float64)
        out[f"{name}_raw"] = ("alpha", values[0])
        out[f"{name}_aligned"] = ("alpha", values[1])
    out.attrs["barrier_raw"] = barrier(out["loss_raw"].values)
    out.attrs["barrier_aligned"] = barrier(out["loss_aligned"].values)
    return out


def compare_endpoints(
    experiment: Any, first: str, second: str, *, store: str | Path | None = None,
    **options: Any,
) -> xr.Dataset:
    """:func:`compare_barriers` between two end points of a trained experiment.

    Args:
        experiment: an :class:`~lossurf.experiment.Experiment` or its directory.
        first, second: end points in the usual notation (``init``, ``adam``,
            ``adam:epoch=10``, ``adam@seed1``); ``second`` is aligned to ``first``.
        store: zarr store (default ``EXP/surfaces/alignment-FIRST-SECOND-SPLIT.zarr``).
        **options: passed to :func:`compare_barriers` (``steps``, ``seed``, ``bn``, ...).

    Returns:
        The Dataset of :func:`compare_barriers`, with the end points' provenance in attrs.
    """
    from lossurf.devices import check_device
    from lossurf.experiment import Experiment, endpoint_attrs, load_experiment

    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    points = [experiment.resolve(first), experiment.resolve(second)]
    options["device"] = str(check_device(options.get("device") or experiment.config.device))
    if store is None:
        safe = "-".join(p.label.replace(":", "_").replace("=", "") for p in points)
        split = options.get("split", "train")
        store = experiment.path / "surfaces" / f"alignment-{safe}-{split}.zarr"
    provenance = {"experiment": str(experiment.path), **endpoint_attrs(points)}
    # The grid's third anchor is the aligned second end point: same run, same file.
    for key, values in provenance.items():
        if isinstance(values, list):
            provenance[key] = values + [values[1]]
    provenance["anchor_labels"][2] = f"{points[1].label} (aligned)"
    return compare_barriers(experiment.model(), points[0].weights, points[1].weights,
                            experiment.dataset(), store=store,
                            attrs={**provenance, **options.pop("attrs", {})}, **options)
