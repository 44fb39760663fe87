"""What every recipe shares: the run context, shared experiments, surfaces and tables.

Experiments are shared between recipes: ``OUT/experiments/<preset>-<tag>-<hash>`` holds every
method of the preset (and every switch) for every seed, and each recipe trains only the runs it
needs (``train_experiment(runs=...)``), so ``restarts`` reuses what ``optimizers`` trained and
``batchnorm`` what both did. The hash covers the whole training config (learning rates
included), so a changed preset or an ``--lr-search`` choice trains into a fresh directory.
Surfaces go to ``OUT/<recipe>/surfaces/<key>.zarr`` (resumable), tables to
``OUT/<recipe>/tables/<key>.csv``; result paths are relative to ``OUT/<recipe>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossurf import models
from lossurf.backends import Backend
from lossurf.config import ExperimentConfig, InitSpec, RunSpec, SwitchSpec
from lossurf.engine import cpu_threads, train_experiment
from lossurf.errors import LossurfError
from lossurf.experiment import Experiment, endpoint_attrs, load_experiment
from lossurf.experiments.result import RecipeResult
from lossurf.presets import Preset
from lossurf.runs import ensure_directory

__all__ = ["Context", "run_label", "switch_name"]


def switch_name(a: str, b: str, fraction: float, lr: float | None = None) -> str:
    """Run name of "method ``a`` for ``fraction`` of the epochs, then ``b``" (at learning rate
    ``lr`` after the switch when it is not ``b``'s own: ``adam-to-sgd-50-lr0.01``)."""
    name = f"{a}-to-{b}-{round(fraction * 100)}"
    return name if lr is None else f"{name}-lr{lr:g}"


def run_label(exp: Experiment, run: str, seed: int) -> str:
    """The run's name in ``exp`` (``adam`` with one seed, ``adam@seed1`` with several)."""
    return run if len(exp.config.seeds) == 1 else f"{run}@seed{seed}"


@dataclass
class Context:
    """One recipe's run: the preset, the output folder, and caches of loaded things."""

    preset: Preset
    out: Path
    recipe: str
    data_dir: Path | None = None
    progress: bool = True
    lrs: dict[str, float] = field(default_factory=dict)
    #: Where runs train: None here, one after the other; a backend (the worker processes of
    #: ``--jobs N``, kept across every experiment of the recipes) trains several at once.
    backend: Backend | None = None
    _data: dict[str, Any] = field(default_factory=dict)
    _models: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        ensure_directory(self.root)
        if not self.lrs:
            self.lrs = {name: m.lr for name, m in self.preset.methods.items()}

    @property
    def root(self) -> Path:
        return self.out / self.recipe

    def rel(self, path: Path) -> str:
        """``path`` relative to this recipe's folder (as result.json stores it)."""
        return os.path.relpath(path, self.root)

    # ---- training -------------------------------------------------------------------------
    def method_run(self, method: str) -> RunSpec:
        spec = self.preset.methods[method]
        return RunSpec(optimizer=spec.optimizer, lr=self.lrs[method], options=spec.options, name=method)

    def switch_run(self, a: str, b: str, fraction: float, lr: float | None = None) -> RunSpec:
        """``a`` then ``b`` after ``fraction`` of the epochs; ``b`` at ``lr`` (default its own)."""
        first, second = self.preset.methods[a], self.preset.methods[b]
        switch = SwitchSpec(to=second.optimizer, lr=self.lrs[b] if lr is None else lr,
                            at=fraction, options=second.options)
        return RunSpec(
            optimizer=first.optimizer, lr=self.lrs[a], options=first.options, switch=switch,
            name=switch_name(a, b, fraction, lr),
        )

    def variant_lr(self, variant: Any, b: str) -> float | None:
        """The learning rate ``b`` runs at after a switch of ``variant``: None when it is
        ``b``'s own (so the run is the plain switch, trained once and shared)."""
        lr = variant.lrs.get(b)
        return None if lr is None or lr == self.lrs[b] else lr

    def switches(self) -> list[tuple[str, str, float, float | None]]:
        """Every switched run of the preset, once: ``(a, b, fraction, lr after or None)`` for
        the plain switches, then the learning-rate variants (Figs. 7(d), 12-15)."""
        sw = self.preset.switching
        found = [(a, b, f, None) for a, b in sw.pairs for f in sw.fractions]
        for v in sw.variants:
            for a, b in v.pairs:
                for f in v.fractions or sw.fractions:
                    item = (a, b, f, self.variant_lr(v, b))
                    if item not in found:
                        found.append(item)
        return found

    def config(
        self,
        tag: str = "",
        *,
        batch_norm: bool | None = None,
        init: InitSpec | None = None,
        methods: list[str] | None = None,
        seeds: list[int] | None = None,
        epochs: int | None = None,
    ) -> ExperimentConfig:
        """An experiment of the preset: by default every method and every switch, all seeds."""
        p = self.preset
        model = p.model
        if batch_norm is not None:
            if "batch_norm" not in models.options(model.name):
                raise LossurfError(
                    f"model {model.name!r} has no batch_norm option, so the {self.recipe} recipe "
                    "cannot run on it; use a preset with a convolutional model"
                )
            model = model.model_copy(update={"options": {**model.options, "batch_norm": batch_norm}})
        if init is not None:
            model = model.model_copy(update={"init": init})
        runs = [self.method_run(m) for m in (methods or list(p.methods))]
        if methods is None:
            runs += [self.switch_run(*item) for item in self.switches()]
        data = p.data if self.data_dir is None else p.data.model_copy(update={"data_dir": self.data_dir})
        raw = dict(
            p.training_settings(), data=data, model=model, seeds=seeds or p.seeds,
            epochs=epochs or p.epochs, runs=runs,
        )
        body = ExperimentConfig(name="x", **raw).model_dump(mode="json")
        body.pop("name")
        body.get("data", {}).pop("data_dir", None)  # where the files are does not change results
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
        # The name depends on the content only, so recipes asking for the same runs share them.
        hint = model.name + ("-bn" if model.options.get("batch_norm") else "")
        if model.init.scheme != "default":
            hint += f"-init{model.init.mean:g}_{model.init.std:g}"
        return ExperimentConfig(name=f"{p.name}-{hint}-{digest}", **raw)

    def train(self, config: ExperimentConfig, runs: list[str],
              seeds: list[int] | None = None) -> tuple[Experiment, str]:
        """Train (or resume, or skip) ``runs`` (base names) of ``config`` for ``seeds`` (default
        all); returns the experiment and its path relative to the recipe's folder."""
        path = self.out / "experiments" / config.name
        wanted = [name for name, spec, seed in config.iter_runs()
                  if spec.base_name() in runs and (seeds is None or seed in seeds)]
        report = _printer(config.name) if self.progress else None
        # Worker processes load the data from its files themselves: sending the loaded data
        # set to each of them would cost more (a pickled copy per worker).
        dataset = self.dataset(config) if self.backend is None else None
        train_experiment(config, path, runs=wanted, report=report, dataset=dataset,
                         command=f"lossurf run {self.recipe} --preset {self.preset.name}",
                         backend=self.backend)
        return load_experiment(path), self.rel(path)

    def dataset(self, config: ExperimentConfig) -> Any:
        key = config.data.model_dump_json()
        if key not in self._data:
            from lossurf import data

            self._data[key] = data.load(config.data)
        return self._data[key]

    # ---- surfaces --------------------------------------------------------------------------
    def model(self, exp: Experiment) -> Any:
        key = exp.config.model.model_dump_json()
        if key not in self._models:
            self._models[key] = exp.model()
        return self._models[key]

    def eval_data(self, exp: Experiment, split: str) -> Any:
        from lossurf.surface.evaluate import EvalData

        key = (exp.config.data.model_dump_json(), split)
        if key not in self._data:
            s = self.preset.surface
            self._data[key] = EvalData.from_dataset(
                self.dataset(exp.config), split=split, subset=s.subset, seed=0,
                bn_examples=s.bn_examples,
            )
        return self._data[key]

    def finished(self, exp: Experiment, run: str) -> bool:
        return exp.status(run)["status"] == "finished"

    def surface(self, kind: str, key: str, exp: Experiment, points: list[str], *,
                split: str = "train", **options: Any) -> tuple[Any, str]:
        """Compute (or reopen) one surface over the named end points of ``exp``.

        ``points`` are end-point names or ``(label, state_dict)`` pairs. ``kind``: ``line`` (2 points), ``distance`` (line with fdist from the first), ``basin``
        (minimum, init) or a plane kind (``barycentric``, ``bilinear``, ``affine``).
        """
        from lossurf import surface as S

        s = self.preset.surface
        store = self.root / "surfaces" / f"{key}.zarr"
        store.parent.mkdir(parents=True, exist_ok=True)
        resolved = [exp.resolve(p) if isinstance(p, str) else None for p in points]
        states = [r.weights if r else p[1] for r, p in zip(resolved, points)]
        labels = [p if isinstance(p, str) else p[0] for p in points]
        model = self.model(exp)
        attrs: dict[str, Any] = {"endpoints": labels, "experiment": self.rel(exp.path)}
        if all(resolved):
            attrs.update(endpoint_attrs(resolved))
        common = dict(bn=s.bn, store=store, attrs=attrs, progress=self.progress, device=self.preset.device)
        if s.batch_size:
            common["batch_size"] = s.batch_size
        data = self.eval_data(exp, split)
        with cpu_threads(exp.config):
            if kind == "line":
                ds = S.line(model, states[0], states[1], data, **common, **options)
            elif kind == "distance":
                ds = S.line(model, states[0], states[1], data, reference=states[0], **common, **options)
            elif kind == "basin":
                ds = S.basin(model, states[0], states[1], data, **common, **options)
            else:
                ds = S.plane(model, states, data, kind=kind, **common, **options)
        return ds, self.rel(store)

    def functional_distance(self, exp: Experiment, a: str, b: str) -> dict[str, float]:
        from lossurf import surface as S

        # The paper's F(x, theta) is each trained network as it is: its own BN running
        # statistics (what 'interpolate' gives at an anchor), not statistics re-estimated from
        # a few batches as the points between minima need.
        with cpu_threads(exp.config):
            return S.functional_distance(
                self.model(exp), exp.resolve(a).weights, exp.resolve(b).weights,
                self.eval_data(exp, "test"), bn="interpolate", device=self.preset.device,
            )

    # ---- outputs ---------------------------------------------------------------------------
    def table(self, key: str, frame: pd.DataFrame) -> str:
        path = self.root / "tables" / f"{key}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        return self.rel(path)

    def result(self, title: str, section: str) -> RecipeResult:
        return RecipeResult(recipe=self.recipe, title=title, section=section,
                            preset=self.preset.name, root=self.root)


def _printer(name: str):
    def report(run: str, epoch: int, epochs: int, row: dict) -> None:
        if epoch == epochs or row.get("diverged"):
            acc = row.get("test_accuracy", float("nan"))
            state = "diverged" if row.get("diverged") else f"test accuracy {acc:.3f}"
            print(f"  [{name}] {run}: epoch {epoch}/{epochs}, {state}", flush=True)

    return report


def values(ds: Any, var: str = "loss") -> np.ndarray:
    """A surface variable as a float numpy array."""
    return np.asarray(ds[var].values, dtype=float)
