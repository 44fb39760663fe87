"""The paper's experiments as one-command recipes.

``run_recipe("optimizers", "digits", "runs/paper")`` trains what the recipe needs (resuming
anything interrupted), computes its surfaces and writes ``OUT/<recipe>/result.json`` (see
:mod:`lossurf.experiments.result`); ``run_all`` runs every recipe and then the claims;
:func:`lossurf.demo.demo` does all of it on the ``digits`` preset and writes the HTML report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from lossurf.backends import Backend, runs_at_once

from lossurf.errors import LossurfError
from lossurf.experiments import (
    batchnorm, beyond, initialization, optimizers, restarts, runge_kutta, switching,
)
from lossurf.experiments.common import Context
from lossurf.experiments.result import RecipeResult
from lossurf.presets import Preset, load_preset
from lossurf.runs import ensure_directory

__all__ = ["RECIPES", "run_recipe", "run_all"]

#: Recipe name -> its ``run(ctx)`` (paper section in each module's docstring).
RECIPES: dict[str, Callable[[Context], RecipeResult]] = {
    "optimizers": optimizers.run,
    "restarts": restarts.run,
    "switching": switching.run,
    "batchnorm": batchnorm.run,
    "init": initialization.run,
    "runge-kutta": runge_kutta.run,
    "beyond": beyond.run,  # after restarts: its table reads the restarts' basins
}


def _check_name(name: str) -> None:
    if name not in RECIPES:
        raise LossurfError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)} (or all)")


def run_recipe(
    name: str,
    preset: str | Path | Preset,
    out: str | Path,
    data_dir: str | Path | None = None,
    lr_search: bool = False,
    progress: bool = True,
    jobs: int = 1,
    backend: Backend | None = None,
) -> RecipeResult:
    """Run one recipe; writes and returns its result (``OUT/<name>/result.json``).

    Args:
        name: a key of :data:`RECIPES`.
        preset: a built-in preset name, a preset YAML path, or a :class:`Preset`.
        out: the output folder shared by every recipe.
        data_dir: where data files live (overrides the preset's ``data.data_dir``).
        lr_search: pick each method's learning rate on held-out training data first.
        progress: print progress.
        jobs: runs trained at once, each in its own worker process (1: one after the other).
        backend: where the runs train instead (e.g. a :class:`~lossurf.backends.ProcessBackend`
            kept open across recipes, as :func:`run_all` does: its workers start once, not per
            experiment).
    """
    _check_name(name)
    preset = load_preset(preset)
    out = ensure_directory(out)
    began = time.perf_counter()
    lrs: dict[str, float] = {}
    table = None
    if lr_search:
        from lossurf.experiments.lr_search import search_learning_rates

        lrs, table = search_learning_rates(preset, out, list(preset.methods),
                                           data_dir=Path(data_dir) if data_dir else None,
                                           progress=progress)
    if progress:
        print(f"[{name}] preset {preset.name}", flush=True)
    with runs_at_once(jobs, backend) as pool:
        ctx = Context(preset=preset, out=out, recipe=name,
                      data_dir=Path(data_dir) if data_dir else None, progress=progress, lrs=lrs,
                      backend=pool)
        result = RECIPES[name](ctx)
    result.measurements["learning_rates"] = dict(ctx.lrs)
    result.measurements["lr_search"] = bool(lr_search)
    if table is not None:
        result.tables["lr_search"] = ctx.table("lr_search", table)
    result.wall_time = round(time.perf_counter() - began, 2)
    result.save()
    if progress:
        print(f"[{name}] done in {result.wall_time:.1f} s", flush=True)
    return result


def run_all(
    preset: str | Path | Preset,
    out: str | Path,
    data_dir: str | Path | None = None,
    lr_search: bool = False,
    progress: bool = True,
    recipes: list[str] | None = None,
    jobs: int = 1,
    on_recipe: Callable[[RecipeResult], None] | None = None,
) -> list[RecipeResult]:
    """Run every recipe (or ``recipes``), then write ``OUT/claims.json``.

    Recipes a preset leaves out (``batchnorm: null``) are skipped with a note. ``on_recipe`` is
    called with each recipe's result as it ends.
    """
    from lossurf.analysis.claims import evaluate_claims

    preset = load_preset(preset)
    for name in recipes or []:
        _check_name(name)
    ensure_directory(out)  # before any worker starts
    results = []
    # one set of worker processes for every recipe: each start costs an interpreter, torch and
    # (on a GPU) a CUDA context, about 4 s on a CPU and 20 s on an H200
    with runs_at_once(jobs, None) as pool:
        for name in recipes or list(RECIPES):
            if name == "batchnorm" and preset.batchnorm is None:
                if progress:
                    print(f"[{name}] skipped: preset {preset.name} has no batchnorm section")
                continue
            results.append(run_recipe(name, preset, out, data_dir, lr_search, progress,
                                      backend=pool))
            if on_recipe is not None:
                on_recipe(results[-1])
    evaluate_claims(Path(out))
    return results
