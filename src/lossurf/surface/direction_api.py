"""Surfaces around one end point along chosen directions: random, PCA of the trajectory, Hessian.

Every function evaluates ``theta + a*d1 (+ b*d2)`` as an affine grid over the anchors
``(theta, theta + s1*d1, theta + s2*d2)`` (:mod:`lossurf.surface.directions`) with the one
evaluator, so batch-norm policies, stores, resume and Ray apply unchanged. Directions move the
model's parameters only (never batch-norm running statistics: ``bn="recompute"``, the default,
re-estimates them at every point; with ``bn="interpolate"`` every point keeps the center's).

With ``store=PATH`` the directions are written beside the store
(:mod:`lossurf.surface.direction_store`) and a second call reads them back, so a resumed
store is evaluated at the same points. Attrs record the direction kind, its settings, the
directions' content hash (``directions_sha256``) and, per kind, the explained variance and
projected trajectory (PCA) or the eigenvalues (Hessian).

Example::

    ds = lossurf.surface.random_plane(model, weights, data, steps=21, span=1.0, seed=0)
    ds = lossurf.surface.pca_plane(model, [w0, w1, w2, w_final], data, steps=21)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from lossurf.errors import LossurfError
from lossurf.params import (StateDict, as_state, check_compatible, flatten, moving_keys, norm,
                            to_dtypes_of)
from lossurf.params import state_hash, unflatten
from lossurf.surface.direction_store import directions_path, read_directions, write_directions
from lossurf.surface.directions import (
    direction_line_grid,
    direction_plane_grid,
    random_direction,
)
from lossurf.surface.paths import Grid
from lossurf.surface.pca import trajectory_pca

__all__ = ["random_directions", "random_plane", "random_line", "pca_plane", "run_trajectory",
           "hessian_plane"]

# Options of every function here that go to the evaluator and store (see surface.api.line).
_COMMON = ("bn", "split", "subset", "data_seed", "store", "device", "attrs", "chunk_points",
           "backend", "progress", "loss_fn", "bn_data")


def _check_span(span: float) -> float:
    value = float(span)
    if not np.isfinite(value) or value <= 0:
        raise LossurfError(f"span must be a positive, finite number, got {span!r}")
    return value


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LossurfError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def random_directions(
    model: nn.Module, weights: StateDict | nn.Module, *, seed: int = 0, count: int = 2,
    normalization: str = "filter", bias_bn: str = "zero",
) -> list[dict[str, torch.Tensor]]:
    """``count`` seeded Gaussian directions over the model's parameters, normalized (Li et al.).

    One ``torch.Generator`` seeded with ``seed`` draws ``d1``, then ``d2``: the 1-D surface's
    direction is the plane's ``d1``. See :mod:`lossurf.surface.directions` for the options.

    Returns:
        ``[d1, d2, ...]``, each ``{parameter name: tensor}`` shaped and typed like the weights.
    """
    state = _center(model, weights)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    keys = moving_keys(model)
    return [random_direction(state, keys, generator, normalization=normalization, bias_bn=bias_bn)
            for _ in range(count)]


def _anchors(center: dict[str, torch.Tensor], directions: list[dict[str, torch.Tensor]],
             scales: Sequence[float]) -> list[dict[str, torch.Tensor]]:
    """``center`` and ``center + s_i * d_i`` (float64 sums cast back; other keys copied)."""
    out = [center]
    for d, s in zip(directions, scales):
        moved = dict(center)
        for key, value in d.items():
            w = center[key]
            moved[key] = (w.detach().double() + float(s) * value.detach().to(w.device).double()).to(w.dtype)
        out.append(moved)
    return out


def _pack(directions: list[dict[str, torch.Tensor]], extra: dict[str, torch.Tensor]) -> dict:
    out = {f"d{i + 1}.{k}": v for i, d in enumerate(directions) for k, v in d.items()}
    out.update(extra)
    return out


def _unpack(tensors: dict[str, torch.Tensor], count: int) -> tuple[list[dict], dict]:
    directions: list[dict] = [{} for _ in range(count)]
    extra = {}
    for name, tensor in tensors.items():
        head, _, key = name.partition(".")
        if head in {f"d{i + 1}" for i in range(count)} and key:
            directions[int(head[1:]) - 1][key] = tensor
        else:
            extra[name] = tensor
    return directions, extra


def _surface(
    model: nn.Module, center: dict[str, torch.Tensor], grid: Grid, data: Any, *,
    request: dict, make: Callable[[], tuple[list[dict], dict, dict]], options: dict,
    evaluator_options: dict,
) -> tuple[xr.Dataset, dict, dict]:
    """Make (or read back) the directions, then evaluate ``grid`` over their anchors.

    ``make()`` returns ``(directions, facts, extra tensors)``; facts are JSON attrs. Returns the
    Dataset, the facts and the extra tensors.
    """
    from lossurf.locks import exclusive_lock
    from lossurf.surface.api import _run
    from lossurf.surface.store import lock_path

    count = len(grid.anchors) - 1
    request = {**request, "center_sha256": state_hash(center)}
    store = options.get("store")

    def obtain() -> tuple[list[dict], dict, dict]:
        if store is not None:
            found = read_directions(directions_path(store), request)
            if found is not None:
                directions, extra = _unpack(found[0], count)
                return directions, found[1], extra
        directions, facts, extra = make()
        if store is not None:
            write_directions(directions_path(store), _pack(directions, extra), request, facts)
        return directions, facts, extra

    def evaluate(directions: list[dict], facts: dict) -> xr.Dataset:
        labels = ["center"] + [f"center+d{i + 1}" for i in range(count)]
        attrs = {f"direction_{k}": v for k, v in request.items()}
        attrs.update(facts)
        attrs["directions_sha256"] = state_hash(_pack(directions, {}))
        if store is not None:
            attrs["directions_file"] = directions_path(store).name
        attrs.update(options.get("attrs") or {})
        anchors = _anchors(center, directions, grid.attrs["scales"])
        return _run(
            model, anchors, grid, data, labels=labels, bn=options.get("bn", "recompute"),
            split=options.get("split", "train"), subset=options.get("subset"),
            seed=options.get("data_seed", 0), reference=None, store=store,
            device=options.get("device"), attrs=attrs,
            chunk_points=options.get("chunk_points", 32), backend=options.get("backend"),
            progress=options.get("progress", True), options=evaluator_options,
            loss_fn=options.get("loss_fn"), bn_data=options.get("bn_data"),
        )

    if store is None:
        directions, facts, extra = obtain()
        return evaluate(directions, facts), facts, extra
    path = Path(store)
    # the directions file and the store are one result: one writer for both
    with exclusive_lock(lock_path(path), f"surface store {path}"):
        directions, facts, extra = obtain()
        return evaluate(directions, facts), facts, extra


def _split_options(kwargs: dict) -> tuple[dict, dict]:
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _COMMON}
    if "seed" in kwargs:
        raise LossurfError("seed= is not an option here: the data subset's seed is data_seed=, "
                           "a Hessian's start vector's is hessian_seed=")
    return options, kwargs


def _center(model: nn.Module, weights: StateDict | nn.Module) -> dict[str, torch.Tensor]:
    """``weights`` as a state dict of the model's dtypes (floating weights are cast, as the
    surface API and ``load_state_dict`` do), checked against the model."""
    reference = as_state(model)
    state = to_dtypes_of(as_state(weights), reference)
    check_compatible([reference, state], ["the model", "the weights"])
    return state


def random_plane(
    model: nn.Module, weights: StateDict | nn.Module, data: Any, *, steps: int = 21,
    span: float = 1.0, alphas: Sequence[float] | None = None, betas: Sequence[float] | None = None,
    seed: int = 0, normalization: str = "filter", bias_bn: str = "zero", **options: Any,
) -> xr.Dataset:
    """Loss over ``weights + alpha*d1 + beta*d2`` with seeded random directions (Li et al. 2018).

    Args:
        model: the architecture (never modified).
        weights: the center (an end point's state dict).
        data: as in :func:`lossurf.surface.line` (EvalData, Dataset, DataLoader, batches).
        steps: points per axis (default 21); alpha and beta run over ``[-span, span]``.
        span: half-width of the grid in units of the directions (default 1.0: with filter
            normalization, each filter moves by up to its own norm, Li et al.'s ``[-1, 1]``).
        alphas, betas: explicit coordinates; override steps/span.
        seed: the directions' seed (default 0).
        normalization: ``filter`` (default), ``layer`` or ``none``.
        bias_bn: ``zero`` (default, Li et al.'s ``ignore='biasbn'``) or ``keep``.
        **options: ``bn``, ``split``, ``subset``, ``data_seed`` (the subset's seed), ``store``,
            ``device``, ``attrs``, ``chunk_points``, ``backend``, ``progress``, ``loss_fn``,
            ``bn_data`` as in :func:`lossurf.surface.line`; the rest go to the evaluator.

    Returns:
        A Dataset over ``(alpha, beta)``; the center is ``(0, 0)``.
    """
    options, evaluator_options = _split_options(dict(options))
    center = _center(model, weights)
    s = _check_span(span)
    grid = direction_plane_grid("random", alphas, betas, range_x=(-s, s), range_y=(-s, s),
                                steps=steps)
    request = {"kind": "random", "seed": _check_seed(seed), "normalization": normalization,
               "bias_bn": bias_bn, "count": 2}

    def make():
        return random_directions(model, center, seed=seed, count=2, normalization=normalization,
                                 bias_bn=bias_bn), {}, {}

    return _surface(model, center, grid, data, request=request, make=make, options=options,
                    evaluator_options=evaluator_options)[0]


def random_line(
    model: nn.Module, weights: StateDict | nn.Module, data: Any, *, steps: int = 51,
    span: float = 1.0, alphas: Sequence[float] | None = None, seed: int = 0,
    normalization: str = "filter", bias_bn: str = "zero", **options: Any,
) -> xr.Dataset:
    """Loss along ``weights + alpha*d1`` with a seeded random direction (Li et al. 2018).

    ``d1`` is the same direction :func:`random_plane` draws first for the same seed. Arguments
    as in :func:`random_plane` (default 51 steps over ``[-span, span]``).

    Returns:
        A Dataset over ``alpha``; the center is ``alpha = 0``.
    """
    options, evaluator_options = _split_options(dict(options))
    center = _center(model, weights)
    s = _check_span(span)
    grid = direction_line_grid("random", alphas, range=(-s, s), steps=steps)
    request = {"kind": "random", "seed": _check_seed(seed), "normalization": normalization,
               "bias_bn": bias_bn, "count": 1}

    def make():
        return random_directions(model, center, seed=seed, count=1, normalization=normalization,
                                 bias_bn=bias_bn), {}, {}

    return _surface(model, center, grid, data, request=request, make=make, options=options,
                    evaluator_options=evaluator_options)[0]


def run_trajectory(experiment: Any, run: str) -> tuple[list[dict[str, torch.Tensor]], list[int], dict]:
    """A run's checkpoints, oldest first, ending with its final weights (the PCA center).

    ``run`` is ``RUN`` (the final weights) or ``RUN:epoch=N`` (the trajectory up to epoch N,
    centered there). The initialization is epoch 0; every saved epoch before the center
    follows (``checkpoint_every`` sets how many).

    Returns:
        ``(states, epochs, provenance attrs)``.
    """
    from lossurf.experiment import endpoint_attrs

    end = experiment.resolve(run)
    last = experiment.config.epochs if end.checkpoint == "final" else (
        0 if end.checkpoint == "init" else int(end.checkpoint.split("=", 1)[1]))
    saved = [e for e in experiment.layout.epochs_saved(end.run) if 0 < e < last]
    epochs = [0] + saved
    states = [experiment.weights(end.run, "init")] + [experiment.weights(end.run, e) for e in saved]
    attrs = {"experiment": str(experiment.path), "trajectory_run": end.run,
             **endpoint_attrs([end])}
    return states + [end.weights], epochs + [last], attrs


def pca_plane(
    model: nn.Module, trajectory: Sequence[StateDict | nn.Module] | Any, data: Any, *,
    run: str | None = None, epochs: Sequence[int] | None = None, steps: int = 21,
    margin: float = 0.2, center: bool = False, **options: Any,
) -> xr.Dataset:
    """Loss over the plane of the trajectory's top two principal directions (Li et al. §7).

    The plane passes through the final weights (the last state, the origin) with orthonormal
    directions ``e1, e2`` from :func:`lossurf.surface.pca.trajectory_pca` of the differences
    ``theta_t - theta_final`` over the model's parameters (BN running statistics excluded).
    Coordinates ``x, y`` are weight-space distances along ``e1, e2``. The grid covers the
    projected trajectory (and the origin) with ``margin`` on every side.

    Args:
        model: the architecture.
        trajectory: the checkpoints, oldest first, the final weights last (at least three); or
            an :class:`~lossurf.experiment.Experiment` with ``run=`` (see :func:`run_trajectory`).
        data: as in :func:`lossurf.surface.line`.
        run: the run (``adam``, ``adam:epoch=10``) when ``trajectory`` is an Experiment.
        epochs: each state's epoch, for the ``epoch`` coordinate (default 0, 1, ...).
        steps: points per axis (default 21).
        margin: extension past the trajectory's bounding box, as a fraction of its width and
            height (default 0.2).
        center: subtract the differences' mean before the SVD (scikit-learn's PCA, as in Li et
            al.'s code); default False (see :mod:`lossurf.surface.pca`).
        **options: as in :func:`random_plane`.

    Returns:
        A Dataset over ``(x, y)`` plus ``trajectory_x``, ``trajectory_y`` over ``epoch`` (also
        in attrs ``pca_trajectory_x``/``_y``/``pca_epochs``, which the store keeps), attrs
        ``pca_explained_variance_ratio`` (the two directions') and ``pca_centered``.
    """
    from lossurf.experiment import Experiment

    options, evaluator_options = _split_options(dict(options))
    if isinstance(trajectory, Experiment):
        if run is None:
            raise LossurfError("pass run= (e.g. run='adam') with an Experiment")
        states, found_epochs, provenance = run_trajectory(trajectory, run)
        epochs = found_epochs if epochs is None else epochs
        options["attrs"] = {**provenance, **(options.get("attrs") or {})}
    else:
        states = [as_state(s) for s in trajectory]
    if len(states) < 3:
        fix = "pass a trajectory of three or more weight vectors"
        if isinstance(trajectory, Experiment):
            config = trajectory.config
            fix = ("train with more epochs" if config.checkpoint_every == 1 else
                   "train with checkpoint_every: 1") + (" or pick a later epoch of the run"
                                                        if ":" in str(run) else "")
        raise LossurfError(
            f"PCA of a trajectory needs at least three checkpoints (two besides the final "
            f"weights), got {len(states)}; {fix}"
        )
    epochs = list(range(len(states))) if epochs is None else [int(e) for e in epochs]
    if len(epochs) != len(states):
        raise LossurfError(f"got {len(epochs)} epochs for {len(states)} checkpoints; give one each")
    if not np.isfinite(margin) or margin < 0:
        raise LossurfError(f"margin must be a finite fraction >= 0, got {margin}")
    final = _center(model, states[-1])
    states = [to_dtypes_of(state, final) for state in states[:-1]] + [final]
    check_compatible([final] + states[:-1], ["the final weights"] + [f"checkpoint {e}" for e in epochs[:-1]])
    keys = moving_keys(model)
    base = flatten(final, keys)
    matrix = torch.stack([flatten(s, keys) - base for s in states[:-1]])
    # an anchor at theta + s*e keeps float32 rounding small relative to s*e (|e| = 1)
    scale = max(norm(final, keys), 1.0)
    request = {"kind": "pca", "centered": bool(center), "keys": len(keys),
               "trajectory_sha256": [state_hash(s) for s in states[:-1]], "epochs": epochs}

    def make():
        result = trajectory_pca(matrix, center=center)
        # kept in float64: the stored directions are exactly the orthonormal e1, e2
        like = {k: final[k].double() for k in keys}
        directions = [unflatten(result.directions[i], like, keys) for i in range(2)]
        coords = np.vstack([result.coordinates, np.zeros((1, 2))])
        facts = {"pca_explained_variance_ratio": result.explained_variance_ratio.tolist(),
                 "pca_centered": result.centered, "pca_epochs": epochs,
                 "pca_trajectory_x": coords[:, 0].tolist(), "pca_trajectory_y": coords[:, 1].tolist(),
                 "pca_parameters": "model parameters (BN running statistics excluded)"}
        return directions, facts, {"trajectory": torch.from_numpy(coords)}

    # the grid's extent depends on the trajectory, so the directions come first
    directions_holder: dict = {}

    def make_once():
        if "made" not in directions_holder:
            directions_holder["made"] = make()
        return directions_holder["made"]

    found = None
    if options.get("store") is not None:
        found = read_directions(directions_path(options["store"]),
                                {**request, "center_sha256": state_hash(final)})
    facts = found[1] if found is not None else make_once()[1]
    tx, ty = np.asarray(facts["pca_trajectory_x"]), np.asarray(facts["pca_trajectory_y"])
    x_low, x_high = float(tx.min()), float(tx.max())
    y_low, y_high = float(ty.min()), float(ty.max())
    w, h = x_high - x_low, y_high - y_low
    grid = direction_plane_grid(
        "pca", range_x=(x_low - margin * w, x_high + margin * w),
        range_y=(y_low - margin * h, y_high + margin * h), steps=steps, scales=(scale, scale),
        dims=("x", "y"))
    ds, facts, _ = _surface(model, final, grid, data, request=request, make=make_once,
                            options=options, evaluator_options=evaluator_options)
    ds["trajectory_x"] = ("epoch", np.asarray(facts["pca_trajectory_x"], np.float64))
    ds["trajectory_y"] = ("epoch", np.asarray(facts["pca_trajectory_y"], np.float64))
    return ds.assign_coords(epoch=np.asarray(facts["pca_epochs"], np.int64))


def hessian_plane(
    model: nn.Module, weights: StateDict | nn.Module, data: Any, *, steps: int = 21,
    span: float = 1.0, alphas: Sequence[float] | None = None, betas: Sequence[float] | None = None,
    hessian_subset: int | None = 512, hessian_tol: float = 1e-4, hessian_seed: int = 0,
    **options: Any,
) -> xr.Dataset:
    """Loss over ``weights + alpha*d1 + beta*d2`` along the Hessian's top two eigenvectors.

    ``d1, d2`` are the unit eigenvectors of the two largest Hessian eigenvalues at ``weights``
    (Lanczos, :func:`lossurf.hessian.top_eigenpairs`, on a fixed ``hessian_subset`` of the
    training split), each **scaled to the norm of the weights** over the model's parameters,
    so that ``span`` means what it means for :func:`random_plane` (coordinate 1 moves as far
    as the weights' norm). Attrs ``hessian_eigenvalues``, ``hessian_residuals`` and
    ``direction_norm`` record them.

    Args:
        hessian_subset: examples the Hessian is computed on (default 512; None for all).
        hessian_tol: Lanczos relative residual tolerance (default 1e-4).
        hessian_seed: Lanczos start vector's seed (default 0).
        Others: as in :func:`random_plane`.
    """
    from lossurf.hessian import top_eigenpairs

    options, evaluator_options = _split_options(dict(options))
    if hessian_subset is not None and (isinstance(hessian_subset, bool)
                                       or not isinstance(hessian_subset, int) or hessian_subset < 1):
        raise LossurfError(f"hessian_subset (--hessian-subset) must be at least 1 example, got "
                           f"{hessian_subset!r}; leave it out for 512")
    center = _center(model, weights)
    s = _check_span(span)
    grid = direction_plane_grid("hessian", alphas, betas, range_x=(-s, s), range_y=(-s, s),
                                steps=steps)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    request = {"kind": "hessian", "subset": hessian_subset, "tol": float(hessian_tol),
               "seed": _check_seed(hessian_seed), "split": "train",
               "data_seed": options.get("data_seed", 0)}

    def make():
        result = top_eigenpairs(model, center, data, k=2, tol=hessian_tol, seed=hessian_seed,
                                subset=hessian_subset, data_seed=options.get("data_seed", 0),
                                device=options.get("device"))
        length = norm(center, names)
        vectors = torch.as_tensor(result["eigenvectors"].values, dtype=torch.float64)
        directions = []
        for i in range(2):
            d = unflatten(vectors[i] * length, {k: center[k].double() for k in names}, names)
            directions.append({k: d[k] if k in d else torch.zeros_like(center[k], dtype=torch.float64)
                               for k in moving_keys(model)})
        facts = {"hessian_eigenvalues": [float(v) for v in result["eigenvalues"].values],
                 "hessian_residuals": [float(v) for v in result["residuals"].values],
                 "direction_norm": length}
        return directions, facts, {}

    return _surface(model, center, grid, data, request=request, make=make, options=options,
                    evaluator_options=evaluator_options)[0]
