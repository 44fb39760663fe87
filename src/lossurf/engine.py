"""Train every run of an experiment into its directory, resuming whatever was interrupted.

For each seed: one initialization (``init.safetensors``, its sha256 in ``init.json``) loaded by
every run, and one minibatch order per epoch derived from the seed and the epoch (its hash is
recorded in ``orders.json`` by the first run that reaches the epoch and checked by every other,
so a config's epoch count costs nothing up front); both files are :mod:`lossurf.seed_files`.
For each run: per-epoch metrics, checkpoints at the stride, ``final.safetensors``, and a resume
state (:mod:`lossurf.resume`) after every epoch (holding the metrics rows too), so running the
same command again after a kill skips finished runs and continues an interrupted one from its
last epoch, ending bitwise identical (on CPU) to an uninterrupted run.
The metrics rows time an epoch's parts apart: ``wall_time`` (training steps, cumulative),
``eval_time`` (its row's evaluation) and ``checkpoint_time`` (its checkpoint and resume state),
each read after the device's queued work is done; ``precision`` holds for steps and evaluation.

``train_experiment`` holds the directory's lock (:mod:`lossurf.locks`) throughout, so a second
writer stops with a message naming the first. Every file read back is checked: a finished run
whose final weights, checkpoints or metrics are missing or differ from the sha256 recorded in
``status.json`` is trained again from its initialization (deterministic: the same bytes on CPU),
and any other damaged file is one :class:`~lossurf.errors.LossurfError` naming it and the fix.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import yaml

from lossurf import __version__, data as data_module, models
from lossurf.backends import Backend, runs_at_once
from lossurf.config import ExperimentConfig
from lossurf.data.base import Dataset, seeded_subset
from lossurf.data.placement import place
from lossurf.devices import check_device
from lossurf.checks import check_trainable
from lossurf.errors import LossurfError
from lossurf.locks import exclusive_lock
from lossurf.threads import threads_for, torch_threads
from lossurf.objective import perplexity
from lossurf.precision import precision_context
from lossurf.resume import RESUME_FIX, ResumeState
from lossurf.runs import (
    ExperimentLayout,
    MetricsLog,
    atomic_write_text,
    checkpoint_damage,
    find_damage,
    load_weights,
    metrics_columns,
    read_bytes,
    read_status,
    remove_temporaries,
    save_weights,
    train_command,
    write_json,
)
from lossurf.seed_files import check_order, ensure_init, read_orders, recorded_init_hash
from lossurf.train import (
    build_optimizer,
    derive_seed,
    distance,
    epoch_order,
    evaluate_split,
    order_hash,
    phase_at,
    switch_epoch,
    train_epoch,
    with_data_statistics,
)

__all__ = [
    "cpu_threads", "resolve_config", "prepare_experiment", "train_run", "train_experiment", "as_config",
    "EpochReport",
]

#: ``report(run_name, epoch, epochs, metrics_row)``: called after every epoch of every run.
EpochReport = Callable[[str, int, int, dict[str, Any]], None]

_EVAL_BATCH = 512

_log = logging.getLogger(__name__)


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
    config: ExperimentConfig | dict | str | Path, out: str | Path, dataset: Dataset | None = None, command: str | None = None
) -> tuple[ExperimentConfig, ExperimentLayout, Dataset]:
    """Validate the config against the data and the directory, write the config, the manifest
    and every seed's initialization (recreating a missing or damaged one). Idempotent; call it
    while holding the directory's lock (:func:`train_experiment` does)."""
    config = as_config(config)
    _check_dataset(dataset)
    check_device(config.device)  # an unavailable device fails before the config saves it
    dataset = dataset if dataset is not None else data_module.load(config.data)
    resolved = resolve_config(config, dataset)
    layout = ExperimentLayout(out)
    text = _config_text(resolved)
    if layout.config.is_file():
        existing = read_bytes(layout.config, "pass another --out")
        if existing != text.encode() and not _same_experiment(existing, resolved):
            _refuse_other(layout, existing, resolved)
    else:
        check_trainable(resolved, dataset)  # what fails here fails before anything is written
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
        ensure_init(layout, resolved, seed)
    return resolved, layout, dataset


def _same_experiment(existing: bytes, config: ExperimentConfig) -> bool:
    """Whether the directory's experiment.yaml, parsed with the defaults of fields it lacks,
    is ``config``: a directory written before a field with a default existed (``precision``)
    is still this experiment, and resumes; its file is left as it is."""
    from lossurf.config import parse_config

    try:
        return parse_config(yaml.safe_load(existing.decode("utf-8"))) == config
    except (UnicodeDecodeError, yaml.YAMLError, LossurfError):
        return False  # _refuse_other says what is wrong with it


def _refuse_other(layout: ExperimentLayout, existing: bytes, config: ExperimentConfig) -> None:
    """The directory's experiment.yaml differs from the config: damaged, or another experiment
    (the message names the fields that differ)."""
    from lossurf.config import parse_config

    try:
        other = parse_config(yaml.safe_load(existing.decode("utf-8")), str(layout.config))
    except (UnicodeDecodeError, yaml.YAMLError, LossurfError) as error:
        reason = ("not UTF-8 text" if isinstance(error, UnicodeDecodeError)
                  else "not a valid experiment config")
        raise LossurfError(
            f"{layout.config} is corrupted ({reason}); replace it with this experiment's YAML "
            "file (or delete it) and run `lossurf train` with that file again"
        ) from None
    was, now = other.model_dump(mode="json"), config.model_dump(mode="json")
    changed = [f"{key} {was.get(key)!r} -> {now[key]!r}"
               if not isinstance(now[key], (dict, list)) else key
               for key in now if was.get(key) != now[key]]
    raise LossurfError(
        f"{layout.root} already holds a different experiment (it differs in "
        f"{', '.join(changed) or 'its file'}); pass another --out or delete that directory to "
        "start over"
    )


def _columns(task: str) -> list[str]:
    return metrics_columns(task == "language_model")


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


def _metrics_row(
    epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, active: str,
    progress: ResumeState, batch_loss: float, *, dataset: Dataset, train_eval: tuple,
    test: tuple, init_state: dict, order_digest: str, device: torch.device, precision: str,
) -> dict[str, Any]:
    """One ``metrics.csv`` row: losses and accuracies on the train subset and the test set
    (the timing columns other than ``wall_time`` are filled in by the caller)."""
    train_loss, train_acc = evaluate_split(model, *train_eval, batch_size=_EVAL_BATCH,
                                           device=device, precision=precision)
    test_loss, test_acc = evaluate_split(model, *test, batch_size=_EVAL_BATCH, device=device,
                                         precision=precision)
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
        "order_hash": order_digest,
        "precision": precision,
    }
    if dataset.task == "language_model":
        row["train_perplexity"] = perplexity(train_loss)
        row["test_perplexity"] = perplexity(test_loss)
    return row


def _recorded_info(path: Path) -> dict[str, Any]:
    """A run's ``run.json``, or ``{}`` when it is missing or unreadable (it is written again)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def train_run(
    layout: ExperimentLayout,
    config: ExperimentConfig,
    name: str,
    dataset: Dataset,
    *,
    report: EpochReport | None = None,
) -> dict[str, Any]:
    """Train (or resume, or skip) one run; returns its status record.

    A finished (or diverged) run whose recorded files are missing or damaged is trained again
    from its initialization: the result is the same bytes (on CPU), and its status records
    why (``"redone"``)."""
    entries = {entry[0]: entry for entry in config.iter_runs()}
    if name not in entries:
        raise LossurfError(f"unknown run {name!r}; this experiment has {sorted(entries)}")
    _, run, seed = entries[name]
    status_path = layout.status(name)
    resume_path = layout.resume_state(name)
    redone: str | None = None
    info = {"name": name, "seed": seed, "spec": run.model_dump(mode="json"),
            "precision": config.precision}
    if run.switch is not None:  # the last epoch of the first method (metrics: optimizer changes after)
        info["switch_epoch"] = switch_epoch(run.switch.at, config.epochs)
    recorded = _recorded_info(layout.run_info(name))
    # the thread count the run was trained with: a damaged run retrains with it, to the same bytes
    threads = recorded.get("threads") if isinstance(recorded.get("threads"), int) else None
    if status_path.is_file():
        status = read_status(layout, name)
        threads = status.get("threads", threads)  # recorded when the run ended
        if status["status"] in ("finished", "diverged"):
            redone = find_damage(layout, name, status)
            if redone is None:
                # A kill between the final status and the removal of the resume state
                # leaves one behind: it describes nothing now.
                resume_path.unlink(missing_ok=True)
                kept = {**info, **({"threads": threads} if threads is not None else {})}
                if recorded != kept:  # a damaged or missing run.json is written again
                    write_json(layout.run_info(name), kept)
                return status
            _log.warning("run %s was %s, but %s; training it again from its initialization",
                         name, status["status"], redone)
            resume_path.unlink(missing_ok=True)
    device = torch.device(config.device)
    init_state = load_weights(
        layout.init(seed), recorded_init_hash(layout, seed),
        fix=f"run {train_command(layout.root)} to recreate it",
    )
    model = models.build(config.model)
    _load_into(model, init_state, layout.init(seed))
    model.to(device)
    orders = read_orders(layout, seed)
    n_train = len(dataset.train_x)
    placed = place(dataset, device)  # on the device when it fits, once per process
    eval_index = seeded_subset(n_train, config.eval_subset, derive_seed("eval-subset", seed) % (2**31))
    eval_index = eval_index.to(placed.train_x.device)
    train_eval = (placed.train_x[eval_index], placed.train_y[eval_index])
    test = (placed.test_x, placed.test_y)
    columns = _columns(dataset.task)

    progress = ResumeState(phase=phase_at(run, 1, config.epochs))
    optimizer_state = None
    if resume_path.is_file():
        progress, model_state, optimizer_state = ResumeState.load(resume_path, device)
        broken = checkpoint_damage(layout, name, progress.checkpoints)
        if broken:  # a checkpoint before the resume point would never be rewritten: start over
            _log.warning("run %s: %s; training it again from its initialization", name, broken)
            resume_path.unlink()
            redone = broken
            progress, model_state = ResumeState(phase=phase_at(run, 1, config.epochs)), model.state_dict()
            optimizer_state = None
        try:
            model.load_state_dict(model_state)
        except RuntimeError as error:
            reason = (str(error).splitlines() or [""])[0][:120]
            raise LossurfError(f"resume state {resume_path} is corrupted ({reason}); {RESUME_FIX}") from None
    optimizer = build_optimizer(run, progress.phase, list(model.parameters()))
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise LossurfError(
                f"resume state {resume_path} is corrupted (optimizer state: {error}); {RESUME_FIX}"
            ) from None
    if progress.threads is None:  # a fresh start: as recorded, else what cpu_threads chose
        progress.threads = threads if threads is not None else torch.get_num_threads()
    # For the rest of this run (the caller's cpu_threads context restores the count after).
    torch.set_num_threads(progress.threads)
    write_json(layout.run_info(name), {**info, "threads": progress.threads})
    if progress.rows is not None:
        metrics = MetricsLog(layout.metrics(name), columns, progress.rows)
        metrics.write()  # restores a metrics.csv truncated or damaged since
    elif progress.epoch > 0:  # a resume state from before the rows were kept in it
        metrics = MetricsLog.read(layout.metrics(name))
        metrics.truncate(progress.epoch)  # rows past the resume state are redone
    else:
        metrics = MetricsLog(layout.metrics(name), columns)
    write_json(status_path, {"status": "running", "epochs_done": progress.epoch,
                             "checkpoints": progress.checkpoints})

    def row_for(epoch: int, batch_loss: float, digest: str) -> dict[str, Any]:
        """The epoch's metrics row, its evaluation timed (``eval_time``)."""
        began = time.perf_counter()
        active = run.optimizer if progress.phase == 0 else run.switch.to  # type: ignore[union-attr]
        # Epoch 0 of a batch-norm net: its running statistics are still the defaults, which
        # say nothing about the data; evaluate a copy with statistics of the training subset.
        with precision_context(config.precision, device):
            evaluated = model if epoch > 0 else with_data_statistics(
                model, train_eval[0], batch_size=_EVAL_BATCH, device=device)
        row = _metrics_row(
            epoch, evaluated, optimizer, active, progress, batch_loss, dataset=dataset,
            train_eval=train_eval, test=test, init_state=init_state, order_digest=digest,
            device=device, precision=config.precision,
        )
        return {**row, "eval_time": round(_elapsed(began, device), 4), "checkpoint_time": 0.0}

    if progress.epoch == 0:
        metrics.append(row_for(0, math.nan, ""))
    if report:
        report(name, progress.epoch, config.epochs, metrics.rows[-1] if metrics.rows else {})
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        phase = phase_at(run, epoch, config.epochs)
        if phase != progress.phase:
            progress.phase = phase
            optimizer = build_optimizer(run, phase, list(model.parameters()))
        order = epoch_order(seed, epoch, n_train)
        digest = order_hash(order)
        orders = check_order(layout, seed, epoch, digest, orders)
        began = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # Dropout masks depend only on (seed, run, epoch): resuming replays them exactly.
            torch.manual_seed(derive_seed("dropout", seed, name, epoch))
            stats = train_epoch(
                model, optimizer, dataset, order, config.batch_size,
                augment_seed=derive_seed("augment", seed, epoch), device=device,
                placed=placed, precision=config.precision,
            )
        progress.wall_time += _elapsed(began, device)
        progress.evaluations += stats.gradient_evaluations
        if stats.diverged:
            metrics.append({**row_for(epoch, stats.mean_batch_loss, digest),
                            "train_loss": math.nan, "test_loss": math.nan})
            status = {"status": "diverged", "diverged_epoch": epoch, "epochs_done": epoch,
                      "checkpoints": progress.checkpoints, "metrics_sha256": metrics.sha256,
                      "threads": progress.threads}
            if redone:
                status["redone"] = redone
            write_json(status_path, status)
            resume_path.unlink(missing_ok=True)
            if report:
                report(name, epoch, config.epochs, {"diverged": True})
            return status
        row = row_for(epoch, stats.mean_batch_loss, digest)
        began = time.perf_counter()
        if epoch % config.checkpoint_every == 0:
            path = layout.checkpoint(name, epoch)
            progress.checkpoints[path.name] = save_weights(path, model.state_dict())
        # The resume state holds the rows, this one with the checkpoint's time so far; the
        # row in metrics.csv (and in the next resume state) adds the resume state's own write.
        progress.epoch = epoch
        so_far = {**row, "checkpoint_time": round(_elapsed(began, device), 4)}
        progress.rows = [*metrics.rows, {c: so_far.get(c, "") for c in metrics.columns}]
        progress.save(resume_path, model, optimizer)
        row["checkpoint_time"] = round(_elapsed(began, device), 4)
        metrics.append(row)
        progress.rows = metrics.rows
        # The checkpoint hashes, for readers of a run still in progress.
        write_json(status_path, {"status": "running", "epochs_done": epoch,
                                 "checkpoints": progress.checkpoints})
        if report:
            report(name, epoch, config.epochs, row)
    final = layout.checkpoint(name, None)
    progress.checkpoints[final.name] = save_weights(final, model.state_dict())
    status = {"status": "finished", "epochs_done": config.epochs, "checkpoints": progress.checkpoints,
              "metrics_sha256": metrics.sha256, "threads": progress.threads}
    if redone:
        status["redone"] = redone
    write_json(status_path, status)
    resume_path.unlink(missing_ok=True)
    return status


def _elapsed(began: float, device: torch.device) -> float:
    """Seconds since ``began`` (``time.perf_counter()``), after the device's queued work is
    done, so a timer reads the work of its own column."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def train_experiment(
    config: ExperimentConfig | dict | str | Path,
    out: str | Path,
    *,
    runs: str | list[str] | None = None,
    report: EpochReport | None = None,
    dataset: Dataset | None = None,
    command: str | None = None,
    backend: Backend | None = None,
    jobs: int = 1,
) -> dict[str, dict[str, Any]]:
    """Train every run (or the named ``runs``: one name or a list) of ``config`` (an
    :class:`ExperimentConfig`, a dict of an experiment file's fields, or the path of one) into
    ``out``; returns each run's status. Finished runs are skipped; a diverged run is recorded and the others go on.

    The directory's lock is held throughout (by this process, the driver, with a backend): a
    second ``train_experiment`` on the same ``out`` stops with a :class:`LossurfError` naming
    this one. Temporary files left by a killed writer are removed first.

    With a ``backend`` (e.g. :class:`lossurf.backends.RayBackend`) each run is one task
    (:class:`lossurf.distributed.TrainRunTask`) that writes into its run directory, so ``out``
    must be on storage every worker sees at the same path; ``report`` is then called once per
    run, when it ends. Without one, runs train here, one after the other. ``jobs`` > 1 trains
    that many runs at once, each in its own worker process on this machine
    (:class:`lossurf.backends.ProcessBackend`; see docs/concurrency.md)."""
    config = as_config(config)
    if not isinstance(out, (str, Path)):
        raise LossurfError(f"out must be a directory path (str or Path), got {out!r}")
    _check_dataset(dataset)
    if isinstance(runs, str):
        runs = [runs]  # one run's name
    elif runs is not None:
        if not (isinstance(runs, (list, tuple)) and all(isinstance(r, str) for r in runs)):
            raise LossurfError(f"runs must be a run name or a list of run names, got {runs!r}; "
                               f"this experiment has {config.run_names()}")
        runs = list(runs)
    if jobs != 1:
        with runs_at_once(jobs, backend) as pool:
            return train_experiment(config, out, runs=runs, report=report, dataset=dataset,
                                    command=command, backend=pool)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LossurfError(f"--out {out} is a file, not a directory; pass the path of a directory")
    with exclusive_lock(out, f"experiment directory {out}"):
        for directory in ExperimentLayout(out).writable_dirs():
            remove_temporaries(directory)  # we hold the lock: no live writer owns them
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


def as_config(config: Any) -> ExperimentConfig:
    """An experiment's config from what a Python caller passes: an :class:`ExperimentConfig`,
    a mapping of its fields (as an experiment file holds them), or the path of a YAML file.

    Raises:
        LossurfError: anything else, an invalid field, or a missing or unreadable file.
    """
    from lossurf.config import load_config, parse_config

    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise LossurfError(f"config is of type {type(config).__name__}; pass an ExperimentConfig "
                       "(lossurf.config.load_config(path)), a dict of an experiment file's fields "
                       "or the path of an experiment YAML file")


def _check_dataset(dataset: Any) -> None:
    if dataset is not None and not isinstance(dataset, Dataset):
        raise LossurfError(f"dataset is of type {type(dataset).__name__}, not a lossurf Dataset; "
                           "pass None (the config's data:) or a Dataset such as "
                           "lossurf.data.load(config.data)")


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
