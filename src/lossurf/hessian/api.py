"""The Hessian of your own model at any weights, from a notebook or the CLI.

Every function takes an ``nn.Module`` (only its architecture is used), the weights to analyse
(a state dict or a module) and a data source (an :class:`~lossurf.surface.evaluate.EvalData`, or
a :class:`lossurf.data.Dataset` with ``split``, ``subset`` and ``data_seed``, as the surface
functions take). The loss is the mean training objective over those examples with batch norm in
eval mode (see :mod:`lossurf.hessian.hvp`). Each returns an xarray Dataset whose attrs record the
tolerance, iterations and seed of the method; with ``store=PATH`` each analysis is a part of a
zarr store (:mod:`lossurf.hessian.store`), and asking again reuses a finished part.

Example::

    ds = lossurf.hessian.analyze(model, weights, data, top=5, trace=True, density=True)
    ds.eigenvalues.values, float(ds.trace), ds.density.plot()
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from lossurf.errors import LossurfError
from lossurf.hessian.density import check_density_grid, check_slq, density_grid, slq, spectral_density
from lossurf.hessian.hvp import HessianOperator
from lossurf.hessian.lanczos import lanczos_top
from lossurf.hessian.sharpness import check_sharpness, eps_sharpness_of
from lossurf.hessian.store import PARTS, check_path, check_store, load, read_part, write_part
from lossurf.hessian.trace import check_hutchinson, hutchinson
from lossurf.locks import exclusive_lock
from lossurf.params import StateDict, as_state, state_hash
from lossurf.threads import threads_for, torch_threads

__all__ = ["analyze", "top_eigenpairs", "trace", "density", "eps_sharpness"]


def _versions() -> dict[str, str]:
    from lossurf import __version__

    return {"lossurf_version": __version__, "torch_version": torch.__version__}


def _top(op: HessianOperator, r: dict) -> xr.Dataset:
    res = lanczos_top(op.hvp, op.n, k=r["k"], tol=r["tol"], max_iter=r["max_iter"], seed=r["seed"],
                      device=op.device)
    data = {"eigenvalues": ("k", res.eigenvalues), "residuals": ("k", res.residuals)}
    if r["eigenvectors"]:
        data["eigenvectors"] = (("k", "parameter"), res.eigenvectors.cpu().numpy())
    attrs = {"topk_method": "Lanczos, full reorthogonalization (float64 basis)",
             "topk_tol": r["tol"], "topk_iterations": res.iterations,
             "topk_converged": res.converged, "topk_seed": r["seed"], "topk_hvps": res.iterations}
    return xr.Dataset(data, coords={"k": np.arange(1, r["k"] + 1)}, attrs=attrs)


def _trace(op: HessianOperator, r: dict) -> xr.Dataset:
    res = hutchinson(op.hvp, op.n, tol=r["tol"], min_samples=r["min_samples"],
                     max_samples=r["max_samples"], seed=r["seed"], device=op.device)
    data = {"trace": ((), res.estimate), "trace_stderr": ((), res.stderr),
            "trace_samples": ("trace_sample", res.samples)}
    attrs = {"trace_method": "Hutchinson, Rademacher probes", "trace_tol": r["tol"],
             "trace_iterations": len(res.samples), "trace_converged": res.converged,
             "trace_seed": r["seed"], "trace_hvps": len(res.samples)}
    return xr.Dataset(data, attrs=attrs)


def _density(op: HessianOperator, r: dict) -> xr.Dataset:
    quad = slq(op.hvp, op.n, probes=r["probes"], steps=r["steps"], seed=r["seed"], device=op.device)
    grid, sigma = density_grid(quad, sigma=r["sigma"], points=r["points"])
    data = {"density": ("eigenvalue", spectral_density(quad, grid, sigma, op.n)),
            "slq_nodes": (("slq_probe", "slq_node"), quad.nodes),
            "slq_weights": (("slq_probe", "slq_node"), quad.weights)}
    attrs = {"density_method": "stochastic Lanczos quadrature, Gaussian broadening; "
                               "integrates to the number of parameters",
             "density_sigma": sigma, "density_sigma_relative": r["sigma"],
             "density_iterations": quad.steps, "density_probes": r["probes"],
             "density_seed": r["seed"], "density_hvps": quad.steps * r["probes"]}
    return xr.Dataset(data, coords={"eigenvalue": grid}, attrs=attrs)


def _sharpness(op: HessianOperator, r: dict) -> xr.Dataset:
    results = [eps_sharpness_of(op.gradient, op.theta.to(op.device), eps=e, steps=r["steps"],
                                method=r["method"], seed=r["seed"]) for e in r["eps"]]
    data = {"eps_sharpness": ("eps", [s.sharpness for s in results]),
            "eps_max_loss": ("eps", [s.max_loss for s in results]),
            "loss": ((), results[0].loss)}
    attrs = {"sharpness_method": f"Keskar et al. 2017 eps-sharpness (percent), {r['method']}",
             "sharpness_iterations": r["steps"], "sharpness_seed": r["seed"],
             "sharpness_evaluations": sum(s.evaluations for s in results)}
    return xr.Dataset(data, coords={"eps": list(r["eps"])}, attrs=attrs)


_COMPUTE: dict[str, Callable[[HessianOperator, dict], xr.Dataset]] = {
    "topk": _top, "trace": _trace, "density": _density, "sharpness": _sharpness}


def _run(model: nn.Module, weights: StateDict | nn.Module, data: Any,
         requests: dict[str, dict], *, split: str, subset: int | None, data_seed: int,
         batch_size: int | None, method: str, device: Any, store: str | Path | None,
         attrs: dict | None) -> xr.Dataset:
    from lossurf.surface.api import eval_data
    from lossurf.surface.store import _jsonable

    state = as_state(weights)
    data, described = eval_data(data, split=split, subset=subset, seed=data_seed)
    op = HessianOperator(model, state, data, batch_size=batch_size, method=method, device=device)
    if "topk" in requests:  # the bounds that need the model's size, before the store is made
        k, steps = requests["topk"]["k"], requests["topk"]["max_iter"]
        if k > op.n:
            raise LossurfError(f"--top must be at most the number of parameters ({op.n}), got {k}")
        if k > steps:
            raise LossurfError(f"--top {k} asks for more eigenpairs than the {steps} Lanczos "
                               f"steps allowed (max_iter); ask for at most {steps}")
    root = _jsonable({
        **(attrs or {}), "lossurf_kind": "hessian", "weights_hash": state_hash(state),
        "data": described, "parameters": op.n, "architecture": type(model).__name__,
        "dtype": str(op.dtype).replace("torch.", ""), "bn": "eval (end point's running statistics)",
        "hvp_method": op.method, **_versions()})
    with torch_threads(threads_for(model)):
        if store is None:
            parts = [_COMPUTE[p](op, requests[p]) for p in PARTS if p in requests]
            merged = xr.merge(parts, combine_attrs="drop")
            merged.attrs = {**root, **{k: v for ds in parts for k, v in ds.attrs.items()}}
            return merged
        path = Path(store)
        with exclusive_lock(path, f"Hessian store {path}"):
            check_store(path, root)
            for part in PARTS:
                if part in requests and read_part(path, part, requests[part]) is None:
                    write_part(path, part, _COMPUTE[part](op, requests[part]), requests[part])
        merged = load(path)
    keep = [v for v in merged.data_vars if _part_of(v) in requests]
    return merged[keep]


def _part_of(variable: str) -> str:
    if variable in ("eigenvalues", "residuals", "eigenvectors"):
        return "topk"
    if variable.startswith("trace"):
        return "trace"
    if variable in ("density", "slq_nodes", "slq_weights"):
        return "density"
    return "sharpness"


def _check_settings(top: Any, tol: Any, max_iter: Any, sharpness: Any) -> None:
    """Refuse bad settings of :func:`analyze` in the words of ``lossurf hessian``'s flags
    (``--top``, ``--tol``, ``--sharpness``), before anything is computed or written."""
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
            raise LossurfError(f"--top must be a whole number of eigenpairs, at least 1 (0 for "
                               f"none); got {top!r}")
        if top:
            if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
                raise LossurfError(f"--tol must be a number between 0 and 1 (e.g. 1e-4), got "
                                   f"{tol!r}")
            if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)):
                raise LossurfError(f"max_iter must be a whole number of Lanczos steps, got "
                                   f"{max_iter!r}")
            if max_iter < 1:
                raise LossurfError(f"max_iter must be at least 1 Lanczos step (default 200), "
                                   f"got {max_iter}")
    for eps in sharpness or ():
        good = isinstance(eps, (int, float, np.floating)) and not isinstance(eps, bool)
        if not (good and math.isfinite(eps) and eps > 0):
            raise LossurfError(f"--sharpness must be a positive eps (e.g. 1e-3; 0 for none), got "
                               f"{eps!r}")


def _eps_values(eps: Any, name: str) -> list:
    """``eps`` as a list: one number, or a sequence of numbers (not a string, not a mapping);
    their signs are :func:`_check_settings`'s."""
    def number(value: Any) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    if number(eps):
        return [eps]
    values = (list(eps) if isinstance(eps, Iterable) and not isinstance(eps, (str, bytes, Mapping))
              else None)
    if values is None or not all(number(v) for v in values):  # [] asks for none
        raise LossurfError(f"{name} must be a positive number or a list of them (e.g. 1e-3), "
                           f"got {eps!r}")
    return values


def analyze(model: nn.Module, weights: StateDict | nn.Module, data: Any, *,
            top: int | None = 5, tol: float = 1e-4, max_iter: int = 200,
            eigenvectors: bool = True, trace: bool = False, trace_tol: float = 1e-2,
            trace_samples: tuple[int, int] = (10, 200), density: bool = False,
            density_probes: int = 4, density_steps: int = 80, sigma: float = 0.01,
            points: int = 1001, sharpness: Sequence[float] | None = None,
            sharpness_steps: int = 10, sharpness_method: str = "pgd", seed: int = 0,
            split: str = "train", subset: int | None = None, data_seed: int = 0,
            batch_size: int | None = None, method: str = "auto", device: Any = None,
            store: str | Path | None = None, attrs: dict | None = None) -> xr.Dataset:
    """Any of: top eigenpairs, trace, eigenvalue density, epsilon-sharpness, in one Dataset.

    Args:
        model: the architecture (never modified).
        weights: the point to analyse (state dict or module).
        data: an ``EvalData`` or a ``lossurf.data.Dataset``.
        top: number of top eigenpairs (default 5; None or 0 for none).
        tol, max_iter: Lanczos relative residual tolerance (default 1e-4) and step budget (200).
        eigenvectors: keep the top eigenvectors as flat vectors over ``parameter`` (default True).
        trace: estimate the trace (Hutchinson); ``trace_tol`` is the relative standard error to
            stop at (default 1e-2), ``trace_samples`` the (min, max) probe counts (10, 200).
        density: estimate the eigenvalue density (SLQ) with ``density_probes`` probes of
            ``density_steps`` Lanczos steps, Gaussian width ``sigma`` (a fraction of the
            spectrum's extent), on ``points`` eigenvalues.
        sharpness: epsilon values for the epsilon-sharpness (default none), with
            ``sharpness_steps`` ascent steps by ``sharpness_method`` (``pgd`` or ``lbfgsb``).
        seed: seeds every random start (default 0).
        split, subset, data_seed: which examples, for a ``Dataset`` (default the whole training
            split; see :func:`lossurf.surface.api.eval_data`).
        batch_size, method, device: see :class:`~lossurf.hessian.hvp.HessianOperator`.
        store: a zarr store path (resumable by part); None keeps results in memory.
        attrs: extra provenance (end point labels, checkpoint files) for the attrs.

    Returns:
        A Dataset with ``eigenvalues``/``residuals``/``eigenvectors`` over ``k``, ``trace`` and
        ``trace_stderr``, ``density`` over ``eigenvalue``, ``eps_sharpness`` over ``eps`` (those
        asked for), and attrs with each method's tolerance, iterations and seed.
    """
    if sharpness is not None:
        sharpness = _eps_values(sharpness, "sharpness")
    _check_settings(top, tol, max_iter, sharpness)
    requests: dict[str, dict] = {}
    if top:
        requests["topk"] = {"k": int(top), "tol": tol, "max_iter": max_iter, "seed": seed,
                            "eigenvectors": bool(eigenvectors)}
    if trace:
        requests["trace"] = {"tol": trace_tol, "min_samples": trace_samples[0],
                             "max_samples": trace_samples[1], "seed": seed}
    if density:
        requests["density"] = {"probes": density_probes, "steps": density_steps, "sigma": sigma,
                               "points": points, "seed": seed}
    if sharpness:
        eps = [float(e) for e in sharpness]
        requests["sharpness"] = {"eps": eps, "steps": sharpness_steps, "method": sharpness_method,
                                 "seed": seed}
    if not requests:
        raise LossurfError("nothing to compute; ask for top eigenpairs, the trace, the density "
                           "or the sharpness (e.g. --top 5 or --trace)")
    # every setting is checked before _run makes the store: a refused request leaves nothing
    if "trace" in requests:
        check_hutchinson(trace_tol, *trace_samples)
    if "density" in requests:
        check_slq(density_probes, density_steps)
        check_density_grid(sigma, points)
    if "sharpness" in requests:
        check_sharpness(requests["sharpness"]["eps"][0], sharpness_steps, sharpness_method)
    if store is not None:
        check_path(Path(store))
    return _run(model, weights, data, requests, split=split, subset=subset, data_seed=data_seed,
                batch_size=batch_size, method=method, device=device, store=store, attrs=attrs)


def top_eigenpairs(model: nn.Module, weights: StateDict | nn.Module, data: Any, *, k: int = 5,
                   **options: Any) -> xr.Dataset:
    """The ``k`` largest Hessian eigenvalues (and eigenvectors) by Lanczos; see :func:`analyze`."""
    return analyze(model, weights, data, top=k, **options)


def trace(model: nn.Module, weights: StateDict | nn.Module, data: Any, **options: Any) -> xr.Dataset:
    """The Hessian's trace by Hutchinson's estimator; options as in :func:`analyze`."""
    return analyze(model, weights, data, top=None, trace=True, **options)


def density(model: nn.Module, weights: StateDict | nn.Module, data: Any, **options: Any) -> xr.Dataset:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature; see :func:`analyze`."""
    return analyze(model, weights, data, top=None, density=True, **options)


def eps_sharpness(model: nn.Module, weights: StateDict | nn.Module, data: Any, *,
                  eps: float | Sequence[float] = 1e-3, **options: Any) -> xr.Dataset:
    """Keskar et al.'s epsilon-sharpness for one or more ``eps``; see :func:`analyze`."""
    values = _eps_values(eps, "eps")
    return analyze(model, weights, data, top=None, sharpness=values, **options)
