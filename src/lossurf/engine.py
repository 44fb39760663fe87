"""Train every run of an experiment into its directory, resuming whatever was interrupted.

For each seed: one initialization (``init.safetensors``) loaded by every run, and one minibatch
order per epoch derived from the seed and the epoch (its hash is recorded once in
``orders.json`` and checked by every run). For each run: per-epoch metrics, checkpoints at the
stride, ``final.safetensors``, and a resume state after every epoch, so running the same command
again after a kill skips finished runs and continues an interrupted one from its last epoch,
ending bitwise identical (on CPU) to an uninterrupted run.
"""

from __future__ import annotations

import io
import math
import platform
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
import yaml

from lossurf import __version__, data as data_module, models
from lossurf.backends import Backend
from lossurf.config import ExperimentConfig, RunSpec
from lossurf.data.base import Dataset, seeded_subset
from lossurf.errors import LossurfError
from lossurf.threads import threads_for, torch_threads
from lossurf.objective import perplexity
from lossurf.runs import (
    ExperimentLayout,
    MetricsLog,
    atomic_write_bytes,
    atomic_write_text,
    load_weights,
    read_json,
    save_weights,
    write_json,
)
from lossurf.train import (
    build_optimizer,
    derive_seed,
    distance,
    epoch_order,
    evaluate_split,
    order_hash,
    phase_at,
    train_epoch,
)

__all__ = ["cpu_threads", "resolve_config", "prepare_experiment", "train_run", "train_experiment", "EpochReport"]

#: ``report(run_name, epoch, epochs, metrics_row)``: called after every epoch of every run.
EpochReport = Callable[[str, int, int, dict[str, Any]], None]

_EVAL_BATCH = 512


def resolve_config(config: ExperimentConfig, dataset: Dataset) -> ExperimentConfig:
    """The config with the data-derived model options (classes, channels, vocabulary) filled in,
    so the stored spec rebuilds the model without the data."""
    options = models.resolve_options(config.model.name, dataset.model_options(), config.model.options)
    model = config.model.model_copy(update={"options": options})
    return config.model_copy(update={"model": model})


def _config_text(config: ExperimentConfig) -> str:
    raw = config.model_dump(mode="json")
    # The order a person writes it (name, data, model, seeds, settings, runs), not the order of
    # the class hierarchy, which puts the inherited training settings first.
    first = ("name", "data", "model", "seeds")
    ordered = {k: raw[k] for k in first} | {k: v for k, v in raw.items() if k not in first}
    ordered["runs"] = ordered.pop("runs")
    return yaml.safe_dump(ordered, sort_keys=False)


def prepare_experiment(
    config: ExperimentConfig, out: str | Path, dataset: Dataset | None = None, command: str | None = None
) -> tuple[ExperimentConfig, ExperimentLayout, Dataset]:
    """Validate the config against the data and the directory, write the config, the manifest,
    every seed's initialization and minibatch-order hashes. Idempotent."""
    dataset = dataset if dataset is not None else data_module.load(config.data)
    resolved = resolve_config(config, dataset)
    layout = ExperimentLayout(out)
    text = _config_text(resolved)
    if layout.config.is_file():
        if layout.config.read_text() != text:
            raise LossurfError(
                f"{layout.root} already holds a different experiment; pass another --out "
                "or delete that directory to start over"
            )
    else:
        models.build(resolved.model)  # an unknown model or option fails before anything is written
        for run in resolved.runs:  # an unknown optimizer too
            _check_optimizer(run)
        atomic_write_text(layout.config, text)
    write_json(
        layout.manifest,
        {
            "lossurf": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": command or " ".join(sys.argv),
            "runs": {name: {"seed": seed} for name, _, seed in resolved.iter_runs()},
        },
    )
    for seed in resolved.seeds:
        _ensure_seed(layout, resolved, seed, len(dataset.train_x))
    return resolved, layout, dataset


def _check_optimizer(run: RunSpec) -> None:
    probe = [torch.nn.Parameter(torch.zeros(1))]
    for phase in (0, 1) if run.switch else (0,):
        build_optimizer(run, phase, probe)


def _ensure_seed(layout: ExperimentLayout, config: ExperimentConfig, seed: int, n: int) -> None:
    if not layout.init(seed).is_file():
        model = models.build(config.model, seed=seed)
        save_weights(layout.init(seed), model.state_dict())
    if not layout.orders(seed).is_file():
        hashes = {str(e): order_hash(epoch_order(seed, e, n)) for e in range(1, config.epochs + 1)}
        write_json(layout.orders(seed), hashes)


def _columns(task: str) -> list[str]:
    columns = ["epoch", "optimizer", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    if task == "language_model":
        columns += ["train_perplexity", "test_perplexity"]
    return columns + ["batch_loss", "distance_from_init", "gradient_evaluations", "wall_time", "order_hash"]


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        detail = (
            f"missing {missing[:3]}" if missing else
            f"unexpected {unexpected[:3]}" if unexpected else
            f"shape of {mismatched[0]} is {tuple(state[mismatched[0]].shape)}, "
            f"the model's is {tuple(own[mismatched[0]].shape)}"
        )
        raise LossurfError(
            f"checkpoint {source} is of another architecture ({detail}); "
            "use the checkpoints of this experiment or delete the directory and train again"
        )
    model.load_state_dict(state)


@dataclass
class _Progress:
    """Where a run stands after its last finished epoch: what ``resume.pt`` holds besides the
    model and optimizer state."""

    epoch: int = 0
    phase: int = 0
    evaluations: int = 0
    wall_time: float = 0.0
    checkpoints: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        buffer = io.BytesIO()
        torch.save({**asdict(self), "model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, device: torch.device) -> tuple["_Progress", dict, dict]:
        state = torch.load(io.BytesIO(path.read_bytes()), weights_only=True, map_location=device)
        model, optimizer = state.pop("model"), state.pop("optimizer")
        return cls(**state), model, optimizer


def _metrics_row(
    epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, active: str,
    progress: _Progress, batch_loss: float, *, dataset: Dataset, train_eval: tuple,
    init_state: dict, orders: dict, device: torch.device,
) -> dict[str, Any]:
    """One ``metrics.csv`` row: losses and accuracies on the train subset and the test set."""
    train_loss, train_acc = evaluate_split(model, *train_eval, batch_size=_EVAL_BATCH, device=device)
    test_loss, test_acc = evaluate_split(
        model, dataset.test_x, dataset.test_y, batch_size=_EVAL_BATCH, device=device
    )
    row = {
        "epoch": epoch,
        "optimizer": active,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "batch_loss": batch_loss,
        "distance_from_init": distance(model, init_state),
        "gradient_evaluations": progress.evaluations,
        "wall_time": round(progress.wall_time, 4),
        "order_hash": orders.get(str(epoch), ""),
    }
    if dataset.task == "language_model":
        row["train_perplexity"] = perplexity(train_loss)
        row["test_perplexity"] = perplexity(test_loss)
    return row


def train_run(
    layout: ExperimentLayout,
    config: ExperimentConfig,
    name: str,
    dataset: Dataset,
    *,
    report: EpochReport | None = None,
) -> dict[str, Any]:
    """Train (or resume, or skip) one run; returns its status record."""
    entries = {entry[0]: entry for entry in config.iter_runs()}
    if name not in entries:
        raise LossurfError(f"unknown run {name!r}; this experiment has {sorted(entries)}")
    _, run, seed = entries[name]
    status_path = layout.status(name)
    if status_path.is_file():
        status = read_json(status_path)
        if status["status"] in ("finished", "diverged"):
            return status
    device = torch.device(config.device)
    write_json(layout.run_info(name), {"name": name, "seed": seed, "spec": run.model_dump(mode="json")})
    init_state = load_weights(layout.init(seed))
    model = models.build(config.model)
    _load_into(model, init_state, layout.init(seed))
    model.to(device)
    orders = read_json(layout.orders(seed))
    n_train = len(dataset.train_x)
    eval_index = seeded_subset(n_train, config.eval_subset, derive_seed("eval-subset", seed) % (2**31))
    train_eval = (dataset.train_x[eval_index], dataset.train_y[eval_index])
    metrics = MetricsLog(layout.metrics(name), _columns(dataset.task))

    progress = _Progress(phase=phase_at(run, 1, config.epochs))
    resume_path = layout.resume_state(name)
    optimizer_state = None
    if resume_path.is_file():
        progress, model_state, optimizer_state = _Progress.load(resume_path, device)
        model.load_state_dict(model_state)
    optimizer = build_optimizer(run, progress.phase, list(model.parameters()))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    # Rows past the resume state (or an epoch-0 row of a run killed before epoch 1) are redone.
    metrics.truncate(progress.epoch if progress.epoch > 0 else -1)
    write_json(status_path, {"status": "running", "epochs_done": progress.epoch})

    def row_for(epoch: int, batch_loss: float) -> dict[str, Any]:
        active = run.optimizer if progress.phase == 0 else run.switch.to  # type: ignore[union-attr]
        return _metrics_row(
            epoch, model, optimizer, active, progress, batch_loss, dataset=dataset,
            train_eval=train_eval,
            init_state=init_state, orders=orders, device=device,
        )

    if progress.epoch == 0:
        metrics.append(row_for(0, math.nan))
    if report:
        report(name, progress.epoch, config.epochs, metrics.rows[-1] if metrics.rows else {})
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        phase = phase_at(run, epoch, config.epochs)
        if phase != progress.phase:
            progress.phase = phase
            optimizer = build_optimizer(run, phase, list(model.parameters()))
        order = epoch_order(seed, epoch, n_train)
        if order_hash(order) != orders[str(epoch)]:
            raise RuntimeError(f"minibatch order of epoch {epoch} differs from the recorded one")
        began = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # Dropout masks depend only on (seed, run, epoch): resuming replays them exactly.
            torch.manual_seed(derive_seed("dropout", seed, name, epoch))
            stats = train_epoch(
                model, optimizer, dataset, order, config.batch_size,
                augment_seed=derive_seed("augment", seed, epoch), device=device,
            )
        progress.wall_time += time.perf_counter() - began
        progress.evaluations += stats.gradient_evaluations
        if stats.diverged:
            metrics.append({**row_for(epoch, stats.mean_batch_loss), "train_loss": math.nan, "test_loss": math.nan})
            resume_path.unlink(missing_ok=True)
            status = {"status": "diverged", "diverged_epoch": epoch, "epochs_done": epoch,
                      "checkpoints": progress.checkpoints}
            write_json(status_path, status)
            if report:
                report(name, epoch, config.epochs, {"diverged": True})
            return status
        row = row_for(epoch, stats.mean_batch_loss)
        if epoch % config.checkpoint_every == 0:
            path = layout.checkpoint(name, epoch)
            progress.checkpoints[path.name] = save_weights(path, model.state_dict())
        metrics.append(row)
        progress.epoch = epoch
        progress.save(resume_path, model, optimizer)
        if report:
            report(name, epoch, config.epochs, row)
    final = layout.checkpoint(name, None)
    progress.checkpoints[final.name] = save_weights(final, model.state_dict())
    status = {"status": "finished", "epochs_done": config.epochs, "checkpoints": progress.checkpoints}
    write_json(status_path, status)
    resume_path.unlink(missing_ok=True)
    return status


def train_experiment(
    config: ExperimentConfig,
    out: str | Path,
    *,
    runs: list[str] | None = None,
    report: EpochReport | None = None,
    dataset: Dataset | None = None,
    command: str | None = None,
    backend: Backend | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every run (or the named ``runs``) of ``config`` into ``out``; returns each run's
    status. Finished runs are skipped; a diverged run is recorded and the others go on.

    With a ``backend`` (e.g. :class:`lossurf.backends.RayBackend`) each run is one task
    (:class:`lossurf.distributed.TrainRunTask`) that writes into its run directory, so ``out``
    must be on storage every worker sees at the same path; ``report`` is then called once per
    run, when it ends. Without one, runs train here, one after the other."""
    given = dataset
    resolved, layout, dataset = prepare_experiment(config, out, dataset, command)
    names = resolved.run_names()
    if runs:
        unknown = [r for r in runs if r not in names]
        if unknown:
            raise LossurfError(f"unknown runs {unknown}; this experiment has {names}")
        names = [n for n in names if n in runs]
    if backend is not None:
        return _train_on(backend, layout, resolved, names, given, report)
    with cpu_threads(resolved):
        return {name: train_run(layout, resolved, name, dataset, report=report) for name in names}


def _train_on(
    backend: Backend,
    layout: ExperimentLayout,
    config: ExperimentConfig,
    names: list[str],
    dataset: Dataset | None,
    report: EpochReport | None,
) -> dict[str, dict[str, Any]]:
    """Map the runs over ``backend``; the workers write the run directories themselves."""
    from lossurf.distributed import train_task

    statuses: dict[str, dict[str, Any]] = {}
    for name, status, last_row in backend.map(train_task(layout.root, config, dataset), names):
        if not layout.status(name).is_file():
            raise LossurfError(
                f"run {name!r} finished on a worker but its files are not in {layout.root} "
                "here; put --out on storage that every node mounts at the same path "
                "(see docs/cluster.md)"
            )
        statuses[name] = status
        if report and last_row:
            report(name, status["epochs_done"], config.epochs, last_row)
    return {name: statuses[name] for name in names}


@contextmanager
def cpu_threads(config: ExperimentConfig) -> Iterator[None]:
    """Use ``config.threads`` torch CPU threads (default: see :mod:`lossurf.threads`)."""
    with torch_threads(threads_for(models.build(config.model), config.threads)):
        yield
