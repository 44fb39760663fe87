"""``lossurf curve EXP A B``: fit and evaluate a curve between two end points of an experiment.

The fit trains on the experiment's data set with its model; its files and the evaluated store
live in ``EXP/curves/<A>-<B>-<kind>/`` (see :mod:`lossurf.curves.checkpoint`)::

    request.json, state.pt, bend.safetensors, status.json    the fit (resumable)
    curve-<split>.zarr                                       loss along the curve and the line
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import xarray as xr

from lossurf.curves.api import curve_surface, fit_request
from lossurf.curves.bezier import check_kind, curve_grid
from lossurf.curves.checkpoint import fit_in
from lossurf.curves.train import CurveTrainer
from lossurf.errors import LossurfError
from lossurf.threads import threads_for, torch_threads

__all__ = ["CurveResult", "experiment_curve", "curve_dir"]


@dataclass(frozen=True)
class CurveResult:
    """What :func:`experiment_curve` produced."""

    directory: Path
    store: Path
    dataset: xr.Dataset
    losses: list[float]
    trained: bool


def _safe(label: str) -> str:
    return label.replace(":", "_").replace("=", "").replace("@", "-")


def curve_dir(experiment_path: Path, a: str, b: str, kind: str) -> Path:
    """The default folder of a curve: ``EXP/curves/<A>-<B>-<kind>``."""
    return Path(experiment_path) / "curves" / f"{_safe(a)}-{_safe(b)}-{kind}"


def experiment_curve(
    exp_dir: str | Path, a: str, b: str, *, kind: str = "bezier", epochs: int = 10,
    lr: float = 0.05, optimizer: str = "sgdm", batch_size: int | None = None, seed: int | None = None,
    steps: int = 21, bn: str = "recompute", split: str = "train", subset: int | None = None,
    out: str | Path | None = None, device: str | None = None, progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> CurveResult:
    """Fit (or resume, or reuse) the curve between end points ``a`` and ``b`` of an
    experiment and evaluate it against the straight line.

    Args:
        exp_dir: an experiment directory written by ``lossurf train``.
        a, b: end points in the usual notation (``init``, ``adam``, ``adam:epoch=10``,
            ``adam@seed1``).
        kind: ``bezier`` or ``chain``.
        epochs, lr, optimizer: the fit (see :func:`lossurf.curves.fit_curve`).
        batch_size, seed: default the experiment's batch size and first seed.
        steps, bn, split, subset: the evaluation (see :func:`lossurf.curves.curve_surface`).
        out: the curve's folder (default :func:`curve_dir`).
        device: default the experiment's device.
        progress: progress bar while evaluating.
        on_epoch: called with ``(epoch, mean loss)`` after each trained epoch.
    """
    from lossurf.devices import check_device
    from lossurf.experiment import endpoint_attrs, load_experiment

    check_kind(kind)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise LossurfError(f"batch_size must be a positive integer, got {batch_size!r}; leave it "
                           "out to use the experiment's")
    curve_grid(kind, steps=steps)  # a bad --steps is refused before the bend trains
    experiment = load_experiment(exp_dir)
    device = str(check_device(device or experiment.config.device))
    points = [experiment.resolve(p) for p in (a, b)]
    if points[0].sha256 == points[1].sha256:
        raise LossurfError(f"end points {a!r} and {b!r} are the same weights; a curve needs two "
                           "different end points")
    directory = Path(out) if out is not None else curve_dir(experiment.path, points[0].label,
                                                           points[1].label, kind)
    batch_size = experiment.config.batch_size if batch_size is None else batch_size
    seed = experiment.config.seeds[0] if seed is None else seed
    model, dataset = experiment.model(), experiment.dataset()
    start, end = points[0].weights, points[1].weights
    trainer = CurveTrainer(model, start, end, dataset, kind=kind, lr=lr, batch_size=batch_size,
                           seed=seed, optimizer=optimizer, device=device)
    request = fit_request(start, end, kind=kind, epochs=epochs, lr=lr, batch_size=batch_size,
                          seed=seed, optimizer=optimizer, optimizer_options=None, loss_fn=None,
                          data=dataset)
    request["end_points"] = [p.label for p in points]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise LossurfError(f"epochs must be a positive integer, got {epochs!r}")
    with torch_threads(threads_for(model)):
        bend, losses, trained = fit_in(directory, trainer, epochs, request, on_epoch=on_epoch)
    labels = [points[0].label, f"bend({points[0].label},{points[1].label})", points[1].label]
    ends = endpoint_attrs(points)
    attrs = {"experiment": str(experiment.path), "anchor_labels": labels,
             **{k: v for k, v in ends.items() if k != "anchor_labels"},
             "curve_end_points": [p.label for p in points],
             "curve_training": {k: v for k, v in request.items() if k not in ("start_hash", "end_hash")},
             "curve_train_losses": losses, "curve_epochs": epochs, "curve_seed": seed,
             "curve_bend_file": str(directory / "bend.safetensors")}
    store = directory / f"curve-{split}.zarr"
    ds = curve_surface(model, start, bend, end, dataset, kind=kind, steps=steps, bn=bn,
                       split=split, subset=subset, store=store, device=device, attrs=attrs,
                       progress=progress)
    return CurveResult(directory, store, ds, losses, trained)
