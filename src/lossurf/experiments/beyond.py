"""Beyond the paper: the analyses later work made standard, on the preset's optimizers experiment.

On the ``optimizers`` recipe's experiment (trained here when absent; shared when present):

- a random filter-normalized plane (Li et al. 2018) around the minima of the pair's two methods
  (``sgd`` and ``adam`` where the preset has them);
- the PCA plane of one run's trajectory with the trajectory drawn on it: that needs a checkpoint
  every epoch, so the run is trained again in its own experiment with ``checkpoint_every: 1``
  (same seed, same batches: the same weights; its disk cost is measured);
- per method of ``restarts.methods`` (the methods whose basin surfaces the restarts recipe
  leaves): the Hessian's top eigenvalues, trace, eigenvalue density and Keskar et al.'s
  epsilon-sharpness, in one table beside the paper's basin width;
- a quadratic Bezier curve between the pair's minima (Garipov et al. 2018) vs the straight line;
- weight matching (Ainsworth et al. 2022): the line between the pair's minima before and after
  aligning, and the same for two seeds of the first method.

Every piece is a store reused when present (surfaces, Hessian parts, the curve's fit), so a
second run only redraws. Sizes follow the preset (``surface.plane_steps``, ``line_steps``,
``subset``) and :data:`SETTINGS`; each part's wall time and the load average (1, 5, 15 min)
before and after go to ``measurements["wall_time"]``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from lossurf.analysis.basins import barrier
from lossurf.engine import cpu_threads
from lossurf.errors import LossurfError
from lossurf.experiments.common import Context, run_label
from lossurf.experiments.result import FigureSpec, RecipeResult

TITLE, SECTION = "Beyond the paper", "B"

#: Optimizers whose step adapts per parameter (the paper's "adaptive methods").
ADAPTIVE = ("adam", "rmsprop", "adadelta", "adagrad")


@dataclass(frozen=True)
class Settings:
    """The recipe's budget (the grids' sizes come from the preset's ``surface`` section)."""

    top: int = 3                    # Hessian eigenpairs
    hessian_tol: float = 1e-3       # Lanczos relative residual
    trace_tol: float = 0.1          # Hutchinson relative standard error to stop at
    trace_samples: tuple[int, int] = (5, 20)
    density_probes: int = 2
    density_steps: int = 20
    eps: tuple[float, ...] = (1e-3,)  # epsilon-sharpness box sizes (Keskar et al. use 1e-3)
    sharpness_steps: int = 5
    span: float = 1.0               # random plane's half-width, in filter norms
    curve_epochs: int = 3
    curve_lr: float = 0.05


SETTINGS = Settings()


def pair_of(ctx: Context) -> tuple[str, str]:
    """The two methods compared: ``sgd`` and ``adam`` if the optimizers recipe trains both,
    else its first two methods."""
    methods = ctx.preset.optimizers.methods
    if "sgd" in methods and "adam" in methods:
        return "sgd", "adam"
    return methods[0], methods[1]


def is_adaptive(ctx: Context, method: str) -> bool:
    """Whether a method's (base) optimizer adapts its step per parameter."""
    optimizer = ctx.preset.methods[method].optimizer
    return any(name in optimizer for name in ADAPTIVE)


def _store(ctx: Context, folder: str, key: str) -> Path:
    path = ctx.root / folder / f"{key}.zarr"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _options(ctx: Context) -> dict[str, Any]:
    s = ctx.preset.surface
    options: dict[str, Any] = dict(bn=s.bn, progress=ctx.progress, device=ctx.preset.device)
    if s.batch_size:
        options["batch_size"] = s.batch_size
    return options


def random_planes(ctx: Context, exp, runs: dict[str, str]) -> dict[str, str]:
    """A random filter-normalized plane around each named minimum; method -> store."""
    from lossurf import surface as S

    out = {}
    for method, run in runs.items():
        store = _store(ctx, "surfaces", f"random-{method}")
        attrs = {"endpoints": [run], "experiment": ctx.rel(exp.path)}
        with cpu_threads(exp.config):
            S.random_plane(ctx.model(exp), exp.resolve(run).weights, ctx.eval_data(exp, "train"),
                           steps=ctx.preset.surface.plane_steps, span=SETTINGS.span, seed=0,
                           store=store, attrs=attrs, **_options(ctx))
        out[method] = ctx.rel(store)
    return out


def trajectory_experiment(ctx: Context, method: str, seed: int):
    """``method``'s run of the main experiment trained again with a checkpoint every epoch.

    Returns ``(experiment, relative path, bytes of its checkpoints)``.
    """
    base = ctx.config("main", methods=[method], seeds=[seed])
    if base.checkpoint_every != 1:
        # same data, init and batches: only how often weights are saved differs
        base = base.model_copy(update={"checkpoint_every": 1, "name": f"{base.name}-every1"})
    exp, rel = ctx.train(base, [method], seeds=[seed])
    size = sum(p.stat().st_size for p in Path(exp.path).rglob("*.safetensors"))
    return exp, rel, size


def pca_plane(ctx: Context, exp, run: str) -> tuple[xr.Dataset, str]:
    """The PCA plane of ``run``'s trajectory (resumable store)."""
    from lossurf import surface as S

    store = _store(ctx, "surfaces", f"pca-{run.replace('@', '-')}")
    with cpu_threads(exp.config):
        ds = S.pca_plane(ctx.model(exp), exp, ctx.eval_data(exp, "train"), run=run,
                         steps=ctx.preset.surface.plane_steps, store=store,
                         attrs={"endpoints": [run], "experiment": ctx.rel(exp.path)},
                         **_options(ctx))
    return ds, ctx.rel(store)


def hessians(ctx: Context, exp, runs: dict[str, str]) -> dict[str, tuple[xr.Dataset, str]]:
    """Top eigenvalues, trace, density and epsilon-sharpness per method (resumable stores)."""
    from lossurf import hessian

    out = {}
    for method, run in runs.items():
        store = _store(ctx, "hessian", method)
        with cpu_threads(exp.config):
            ds = hessian.analyze(
                ctx.model(exp), exp.resolve(run).weights, ctx.eval_data(exp, "train"),
                top=SETTINGS.top, tol=SETTINGS.hessian_tol, eigenvectors=False, trace=True,
                trace_tol=SETTINGS.trace_tol, trace_samples=SETTINGS.trace_samples, density=True,
                density_probes=SETTINGS.density_probes, density_steps=SETTINGS.density_steps,
                sharpness=list(SETTINGS.eps), sharpness_steps=SETTINGS.sharpness_steps,
                device=ctx.preset.device, store=store, attrs={"endpoint": run})
        out[method] = (ds, ctx.rel(store))
    return out


def restarts_basins(ctx: Context, methods: list[str], seed: int) -> dict[str, xr.Dataset]:
    """The basin profiles the restarts recipe left for ``seed`` (with their extensions), as
    one Dataset per method over ``lambda``; methods without one are left out."""
    from lossurf.experiments.restarts import profile_of
    from lossurf.surface.store import open_surface

    path = ctx.out / "restarts" / "result.json"
    if not path.is_file():
        return {}
    restarts = RecipeResult.load(path.parent)
    found = {}
    for entry in restarts.measurements.get("basins", []):
        if entry.get("method") not in methods or entry.get("seed") != seed:
            continue
        try:
            parts = [open_surface(restarts.path(p))
                     for p in [entry["surface"], *entry.get("extensions", [])]]
        except (LossurfError, OSError, KeyError):
            continue  # a missing basin leaves its cell empty, not the table
        lam, loss = profile_of(parts)
        found[entry["method"]] = xr.Dataset({"loss": ("lambda", loss)}, coords={"lambda": lam},
                                            attrs=dict(parts[0].attrs))
    return found


def curve(ctx: Context, exp, a: str, b: str):
    """The Bezier curve between two end points, fitted and evaluated (resumable)."""
    from lossurf.curves import experiment_curve

    s = ctx.preset.surface
    folder = ctx.root / "curves" / f"{a}-{b}-bezier".replace("@", "-")
    return experiment_curve(exp.path, a, b, kind="bezier", epochs=SETTINGS.curve_epochs,
                            lr=SETTINGS.curve_lr, steps=s.line_steps, bn=s.bn, subset=s.subset,
                            out=folder, device=ctx.preset.device, progress=ctx.progress)


def alignment(ctx: Context, exp, a: str, b: str) -> tuple[xr.Dataset, str]:
    """The line ``a -> b`` before and after aligning ``b`` to ``a`` (resumable store)."""
    from lossurf.alignment import compare_endpoints

    s = ctx.preset.surface
    store = _store(ctx, "surfaces", f"align-{a}-{b}".replace("@", "-"))
    with cpu_threads(exp.config):
        ds = compare_endpoints(exp, a, b, store=store, steps=s.line_steps, bn=s.bn,
                               subset=s.subset, progress=ctx.progress)
    return ds, ctx.rel(store)


def comparison_sentence(tops: dict[str, float], adaptive: dict[str, bool], sgd: str) -> str:
    """Answer "do adaptive methods' minima have larger top eigenvalues than SGD's?" from
    the numbers (``tops``: method -> top eigenvalue)."""
    if sgd not in tops:
        return f"No top eigenvalue for {sgd}, so the adaptive methods cannot be compared with it."
    ada = {m: v for m, v in tops.items() if adaptive.get(m)}
    if not ada:
        return "No adaptive method has a top eigenvalue here, so the question is not tested."
    larger = [m for m, v in ada.items() if v > tops[sgd]]
    listing = ", ".join(f"{m} {v:.4g}" for m, v in ada.items())
    if len(larger) == len(ada):
        verdict = "Yes: every adaptive method's minimum has a larger top eigenvalue"
    elif not larger:
        verdict = "No: every adaptive method's minimum has a smaller top eigenvalue"
    else:
        verdict = (f"Mixed: {len(larger)} of {len(ada)} adaptive methods' minima have a larger "
                   "top eigenvalue")
    return f"{verdict} than {sgd}'s ({tops[sgd]:.4g}): {listing}."


def lowered(before: float, after: float, by: str) -> str:
    """A sentence saying whether ``by`` lowered a barrier from ``before`` to ``after``."""
    if before <= 0.0:
        return f"there is no barrier for {by} to lower."
    if after < before:
        return f"{by} lowers it by {100 * (before - after) / before:.0f}%."
    return f"{by} does not lower it."


def rows_of(table: pd.DataFrame) -> list[dict]:
    """A table's rows as dicts (NaN cells left out)."""
    return [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))}
            for r in table.to_dict("records")]


def _timed(seconds: dict[str, float], part: str, began: float) -> None:
    seconds[part] = round(seconds.get(part, 0.0) + time.perf_counter() - began, 2)


def run(ctx: Context) -> RecipeResult:
    """Random and PCA planes, Hessian table, Bezier curve and alignment on the optimizers'
    experiment (see the module docstring)."""
    p = ctx.preset
    result = ctx.result(TITLE, SECTION)
    a, b = pair_of(ctx)
    hessian_methods = [m for m in p.restarts.methods if m in p.optimizers.methods] or [a, b]
    s0, s1 = p.seeds[0], p.seeds[1]
    seconds: dict[str, float] = {}
    load_start = [round(v, 2) for v in os.getloadavg()]

    t = time.perf_counter()
    exp, rel = ctx.train(ctx.config("main"), sorted({a, b, *hessian_methods}))
    result.experiments["main"] = rel
    name = lambda m, s=s0: run_label(exp, m, s)  # noqa: E731
    for m in (a, b):
        if not ctx.finished(exp, name(m)):
            raise LossurfError(f"run {name(m)} of {exp.path} did not finish (it diverged?); the "
                               f"{ctx.recipe} recipe compares {a} and {b}: lower its learning rate")
    ok = [m for m in hessian_methods if ctx.finished(exp, name(m))]
    _timed(seconds, "train", t)

    # Random filter-normalized planes around both minima.
    t = time.perf_counter()
    planes = random_planes(ctx, exp, {a: name(a), b: name(b)})
    for m, store in planes.items():
        ds = xr.open_zarr(ctx.root / store)
        loss = np.asarray(ds["loss"].values, float)
        i, j = (int(np.argmin(np.abs(ds[d].values))) for d in ds["loss"].dims)
        centre = float(loss[i, j])
        result.measurements[f"random_plane/{m}"] = {"center_loss": centre,
                                                    "max_loss": float(np.nanmax(loss))}
        result.figures.append(FigureSpec(
            f"random-{m}", f"Random filter-normalized plane around {m}'s minimum",
            f"Training loss over theta + alpha d1 + beta d2 around {m}'s minimum, d1 and d2 "
            f"random directions scaled filter by filter to the weights' norms (Li et al. 2018), "
            f"alpha and beta in [-{SETTINGS.span:g}, {SETTINGS.span:g}]. Loss {centre:.4g} at "
            f"the minimum, up to {np.nanmax(loss):.4g} on the grid.", "surface",
            {"surface": store, "var": "loss", "corner_labels": [name(m), "d1", "d2"]}))
    _timed(seconds, "random_planes", t)

    # PCA plane of b's trajectory (its own experiment, a checkpoint every epoch).
    t = time.perf_counter()
    texp, trel, size = trajectory_experiment(ctx, b, s0)
    _timed(seconds, "pca_training", t)
    t = time.perf_counter()
    result.experiments["trajectory"] = trel
    pca, pca_rel = pca_plane(ctx, texp, run_label(texp, b, s0))
    ratio = [float(v) for v in pca.attrs["pca_explained_variance_ratio"]]
    result.measurements["pca"] = {"run": b, "explained_variance_ratio": ratio,
                                  "checkpoints": len(pca.attrs["pca_epochs"]),
                                  "checkpoint_bytes": int(size)}
    result.figures.append(FigureSpec(
        "pca", f"PCA plane of {b}'s trajectory",
        f"Training loss over the plane of the top two principal directions of {b}'s "
        f"trajectory ({len(pca.attrs['pca_epochs'])} checkpoints, one per epoch), centred on "
        f"its final weights, with the trajectory projected on it. The two directions explain "
        f"{100 * ratio[0]:.1f}% and {100 * ratio[1]:.1f}% of the trajectory's variance. "
        f"Checkpoints on disk: {size / 1e6:.2f} MB.", "trajectory_plane",
        {"surface": pca_rel, "var": "loss", "corner_labels": [b, "e1", "e2"]}))
    _timed(seconds, "pca_plane", t)

    # Hessian and sharpness per method, beside the paper's basin width.
    t = time.perf_counter()
    found = hessians(ctx, exp, {m: name(m) for m in ok})
    basins = restarts_basins(ctx, ok, s0)
    from lossurf.hessian.table import comparison_rows

    rows = comparison_rows({m: ds for m, (ds, _) in found.items()}, basins)
    for row in rows:
        row["adaptive"] = is_adaptive(ctx, row["end point"])
        row["trace stderr"] = float(found[row["end point"]][0]["trace_stderr"])
    table = pd.DataFrame(rows).rename(columns={"end point": "method"})
    result.tables["hessian"] = ctx.table("hessian", table)
    tops = {m: float(ds.eigenvalues.values[0]) for m, (ds, _) in found.items()}
    sgd = a if not is_adaptive(ctx, a) else next(
        (m for m in ok if not is_adaptive(ctx, m)), a)
    answer = comparison_sentence(tops, {m: is_adaptive(ctx, m) for m in ok}, sgd)
    result.measurements["top_eigenvalue"] = tops
    result.measurements["adaptive_sharper"] = answer
    result.measurements["hessian_stores"] = {m: r for m, (_, r) in found.items()}
    result.measurements["basin_width"] = {r["method"]: r["basin width"] for r in rows_of(table)
                                          if isinstance(r.get("basin width"), str)}
    result.figures.append(FigureSpec(
        "hessian-table", "Hessian, sharpness and basin width per method",
        f"One row per method's minimum (seed {s0}): the Hessian's top eigenvalue (Lanczos) and "
        f"trace (Hutchinson) on {p.surface.subset or 'all'} training examples, Keskar et al.'s "
        f"epsilon-sharpness in percent on a box of relative size "
        f"{', '.join(f'{e:g}' for e in SETTINGS.eps)}, and the paper's basin width from the "
        "restarts recipe's basin profile (where it ran; '>=' when the basin reaches the grid's "
        f"end). {answer}", "table", {"table": result.tables["hessian"]}))
    result.figures.append(FigureSpec(
        "hessian-top", "Top Hessian eigenvalue per method",
        f"The largest Hessian eigenvalue at each method's minimum (seed {s0}). {answer}",
        "bars", {"table": result.tables["hessian"], "label": "method",
                 "value": "top eigenvalue", "group": None}))
    result.figures.append(FigureSpec(
        "density", "Hessian eigenvalue density per method",
        f"Eigenvalue density by stochastic Lanczos quadrature ({SETTINGS.density_probes} probes "
        f"of {SETTINGS.density_steps} steps, Gaussian broadening) at each method's minimum; "
        "mass far right of zero means sharp directions. Largest top eigenvalue: "
        + (f"{max(tops, key=tops.get)} ({max(tops.values()):.4g})." if tops else "none."),
        # named by folder and stem, not "*.zarr" paths: the report reads those as surface
        # stores for its settings line, and a Hessian store is not one; the folder's "/" makes
        # the report's figure cache hash every file under it (a changed store is redrawn)
        "density", {"folder": "hessian/", "series": [{"label": m, "hessian": m} for m in found]}))
    _timed(seconds, "hessian", t)

    # A Bezier curve between the pair's minima against the straight line.
    t = time.perf_counter()
    fitted = curve(ctx, exp, name(a), name(b))
    cds = fitted.dataset
    curve_rel = ctx.rel(fitted.store)
    along, line = np.asarray(cds["loss"].values, float), np.asarray(cds["loss_line"].values, float)
    result.measurements["curve"] = {
        "store": curve_rel, "max_loss_curve": float(np.nanmax(along)),
        "max_loss_line": float(np.nanmax(line)), "barrier_curve": barrier(along),
        "barrier_line": barrier(line)}
    c = result.measurements["curve"]
    result.figures.append(FigureSpec(
        "curve", f"Bezier curve between {a}'s and {b}'s minima",
        f"Training loss along a quadratic Bezier curve whose bend was trained for "
        f"{SETTINGS.curve_epochs} epochs (Garipov et al. 2018), against the straight line. "
        f"Barrier (highest loss above the higher end): {c['barrier_curve']:.4g} along the curve, "
        f"{c['barrier_line']:.4g} along the line; " + lowered(c["barrier_line"],
                                                             c["barrier_curve"], "the curve"),
        "curve", {"surface": curve_rel}))
    _timed(seconds, "curve", t)

    # Weight matching: the pair's line, and two seeds of the first method.
    t = time.perf_counter()
    pairs = [(name(a), name(b))]
    if ctx.finished(exp, name(a, s1)):
        pairs.append((name(a, s0), name(a, s1)))
    aligned = {}
    for first, second in pairs:
        ds, store = alignment(ctx, exp, first, second)
        key = f"{first}|{second}"
        raw, done = float(ds.attrs["barrier_raw"]), float(ds.attrs["barrier_aligned"])
        aligned[key] = {"store": store, "barrier_raw": raw, "barrier_aligned": done}
        result.figures.append(FigureSpec(
            f"align-{first}-{second}".replace("@", "-"),
            f"{first} to {second}: before and after weight matching",
            f"Training loss along the line from {first} (alpha = 0) to {second} (alpha = 1), "
            f"raw and after permuting {second}'s hidden units to match {first}'s (Ainsworth et "
            f"al. 2022). Barrier {raw:.4g} before, {done:.4g} after alignment: "
            + lowered(raw, done, "alignment"), "alignment", {"surface": store}))
    result.measurements["alignment"] = aligned
    _timed(seconds, "alignment", t)

    # under "wall_time", the key every tool comparing two runs' results treats as volatile
    result.measurements["wall_time"] = {
        "seconds": seconds,
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]}}
    result.measurements["pair"] = [a, b]
    return result
