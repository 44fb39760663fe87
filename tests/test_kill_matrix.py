"""The kill matrix: SIGKILL the real command at many moments, run it again, get a clean run's bits.

Each command (``lossurf train``, ``lossurf surface plane``, ``lossurf run optimizers``) runs
once uninterrupted as the reference. Each kill point then starts the same command in its own
copy of the inputs, with the progress display on (rich, drawing live bars into a non-TTY
stderr), kills it with SIGKILL (its process group) a fixed delay after a deterministic event in
its output directory (the k-th checkpoint, the k-th zarr chunk, a store's creation) or at a
fixed time from the start, runs the same command again to completion and compares the whole
output tree with the reference: every tensor bitwise, every metrics/table column bitwise (wall
time aside), statuses, results and every zarr array bitwise (see ``tests/_kill.py``). The
delays put the kill inside the work that follows the event (an epoch, a chunk), not only
between two of them.

The commands are independent processes, so the matrix runs two at a time (one per core of the
CI machine); each kill point is then checked by its own test.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import numpy as np
import torch
import xarray as xr
from safetensors.torch import save_file

from _kill import (
    KillPoint, KillResult, at, bar_drawn, compare_trees, copy_tree, files, kill_and_rerun, lines,
    run,
)
from _kill_commands import BARS, DEMO, PLANE, RUN, RUN_PRESET, TRAIN, TRAIN_CONFIG

# ---- the matrix ---------------------------------------------------------------------------

POINTS = [
    # lossurf train: start-up (imports, config, data), preparation, inside epochs, between files
    KillPoint("train:startup", TRAIN, at(1.0)),
    KillPoint("train:init-written", TRAIN, files("exp/seeds/seed-0/init.safetensors")),
    # inside an epoch: a short delay after the previous epoch's state (resume.pt, written right
    # after its metrics row) is complete
    KillPoint("train:sgd-inside-epoch-2", TRAIN, files("exp/runs/sgd/resume.pt"), 0.02),
    # between two files of one epoch: its checkpoint written, its metrics row and state not yet
    KillPoint("train:sgd-epoch-3-checkpoint-written", TRAIN, files("exp/runs/sgd/epoch-0003.safetensors")),
    # every epoch done and final.safetensors written; status and resume state not yet updated
    KillPoint("train:sgd-final-written", TRAIN, files("exp/runs/sgd/final.safetensors")),
    KillPoint("train:rk2-heun-inside-epoch-3", TRAIN, lines("exp/runs/rk2-heun/metrics.csv", 4), 0.05),
    # the switch run (sgd for epochs 1-2, then adam): inside its first adam epoch
    KillPoint("train:switch-inside-the-first-epoch-after-the-switch", TRAIN,
              lines("exp/runs/sgd-to-adam-50/metrics.csv", 4), 0.02),
    # lossurf surface plane: the store's creation (an empty store is written under a hidden
    # temporary name, then renamed), between a chunk's values and its mask, inside a chunk
    KillPoint("plane:store-being-created", PLANE, files(".plane.zarr.creating-*")),
    KillPoint("plane:values-written-mask-not-yet", PLANE, files("plane.zarr/loss/c/*/*", 3)),
    KillPoint("plane:inside-chunk-5", PLANE, files("plane.zarr/computed/c/*/*", 4), 0.1),
    # lossurf run optimizers: training, a store's creation, inside a later surface
    KillPoint("run:training-seed0-adam-finished", RUN,
              files("out/experiments/*/runs/adam@seed0/final.safetensors"), 0.02),
    KillPoint("run:first-store-being-created", RUN, files("out/optimizers/surfaces/.*.zarr.creating-*")),
    KillPoint("run:inside-the-third-surface", RUN, files("out/optimizers/surfaces/*.zarr", 3), 0.05),
    # lossurf demo (after run optimizers): inside its third recipe; the rerun also writes the report
    KillPoint("demo:inside-the-batchnorm-recipe", DEMO, files("out/switching/result.json"), 0.1),
]


def _reference(args: list[str], base: Path, work: Path, bar: str) -> Path:
    """The clean, uninterrupted run of ``args`` (the reference of its kill points)."""
    work = copy_tree(base, work)
    done = run(args, work)
    assert done.code == 0 and done.clean(), done.stderr[-3000:]
    assert bar_drawn(done.stderr, bar), "rich drew no progress bar on stderr"
    return work


def _selected(request) -> list[KillPoint]:
    """The kill points whose tests this session runs (``-k`` or node ids may pick a few)."""
    names = {item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", "") == "test_killed_then_rerun_is_bitwise_a_clean_run"}
    return [p for p in POINTS if p.name in names]


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory) -> dict[str, tuple[KillResult, Path]]:
    """Every selected kill point's result and its command's reference, two commands at a time."""
    points = _selected(request)
    commands = {p.name.split(":")[0] for p in points}
    root = tmp_path_factory.mktemp("kill-matrix")
    bases = {name: root / f"base-{name}" for name in BARS}
    bases["train"].mkdir()
    (bases["train"] / "experiment.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG, sort_keys=False))
    bases["run"].mkdir()
    (bases["run"] / "tiny.yaml").write_text(yaml.safe_dump(RUN_PRESET, sort_keys=False))
    workers = max(1, min(2, os.cpu_count() or 1))
    refs = {}
    with ThreadPoolExecutor(workers) as pool:
        def reference(command: str, args: list[str]):
            return pool.submit(_reference, args, bases[command], root / f"ref-{command}", BARS[command])

        # plane starts from the trained experiment of train, demo from the output of run
        if commands & {"train", "plane"}:
            refs["train"] = reference("train", TRAIN)
        if commands & {"run", "demo"}:
            refs["run"] = reference("run", RUN)
        if "plane" in commands:
            shutil.copytree(refs["train"].result() / "exp", bases["plane"] / "exp")
            refs["plane"] = reference("plane", PLANE)
        if "demo" in commands:
            shutil.copytree(refs["run"].result(), bases["demo"])
            refs["demo"] = reference("demo", DEMO)
        jobs = {}
        # The longest (demo) first, so that no long job starts last.
        for i, point in sorted(enumerate(points), key=lambda ip: not ip[1].name.startswith("demo")):
            command = point.name.split(":")[0]
            work = copy_tree(bases[command], root / f"kill-{i:02d}")
            jobs[point.name] = (pool.submit(lambda p=point, c=command, w=work:
                                            kill_and_rerun(p, refs[c].result(), w)), command)
        return {name: (job.result(), refs[command].result()) for name, (job, command) in jobs.items()}


def test_the_matrix_covers_every_command_and_at_least_ten_moments():
    commands = [p.name.split(":")[0] for p in POINTS]
    assert len(POINTS) >= 10 and set(commands) == set(BARS)
    assert len({p.name for p in POINTS}) == len(POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in POINTS])
def test_killed_then_rerun_is_bitwise_a_clean_run(name, matrix):
    result, _ = matrix[name]
    first, again = result.first, result.again
    context = f"killed at: {result.where}"
    print(f"{name}: killed after {first.elapsed:.1f} s with {context}")  # shown by pytest -rP
    assert first.signalled, f"the command ended (code {first.code}) before the kill point"
    assert first.code == -9, first.stderr[-3000:]
    assert again.code == 0, f"{context}; the rerun exited {again.code}:\n{again.stderr[-3000:]}"
    assert again.clean(), f"{context}; the rerun printed a traceback:\n{again.stderr[-3000:]}"
    assert bar_drawn(again.stderr, BARS[name.split(":")[0]]), "the rerun drew no progress bar"
    assert not result.problems, f"{context}; differences from a clean run:\n" + "\n".join(result.problems)


# ---- the comparison itself ----------------------------------------------------------------


def _tree(root: Path) -> Path:
    run_dir = root / "exp" / "runs" / "sgd"
    run_dir.mkdir(parents=True)
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7}, run_dir / "final.safetensors")
    (run_dir / "metrics.csv").write_text("epoch,optimizer,train_loss,wall_time\n0,sgd,nan,0.0\n1,sgd,0.5,0.25\n")
    (run_dir / "status.json").write_text(f'{{"status": "finished", "path": "{root}/exp", "wall_time": 1}}')
    ds = xr.Dataset({"loss": (("alpha",), np.array([0.1, np.nan, 0.3]))}, coords={"alpha": [0.0, 0.5, 1.0]},
                    attrs={"experiment": str(root / "exp")})
    ds.to_zarr(root / "exp" / "s.zarr", mode="w-", consolidated=False)
    return root


def test_compare_trees_sees_every_kind_of_difference(tmp_path):
    ref = _tree(tmp_path / "a")
    same = _tree(tmp_path / "b")  # other folder (paths normalized), same content
    (same / "exp" / "runs" / "sgd" / "metrics.csv").write_text(
        "epoch,optimizer,train_loss,wall_time\n0,sgd,nan,0.0\n1,sgd,0.5,9.75\n")  # wall time only
    (same / "exp" / "runs" / "sgd" / ".metrics.csv.tmp123").write_text("left by a kill")
    assert compare_trees(ref, same) == []

    def broken(name: str, change) -> list[str]:
        work = _tree(tmp_path / name)
        change(work / "exp")
        return compare_trees(ref, work)

    nudged = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    nudged[1, 2] = torch.nextafter(nudged[1, 2], torch.tensor(10.0))
    assert broken("t", lambda e: save_file({"w": nudged}, e / "runs/sgd/final.safetensors")) == [
        "exp/runs/sgd/final.safetensors: tensor w differs"]
    assert "train_loss" in broken("c", lambda e: (e / "runs/sgd/metrics.csv").write_text(
        "epoch,optimizer,train_loss,wall_time\n0,sgd,nan,0.0\n1,sgd,0.5000000000000001,0.25\n"))[0]
    assert "status" in broken("j", lambda e: (e / "runs/sgd/status.json").write_text(
        '{"status": "running", "path": "x"}'))[0]
    assert "array loss differs" in broken("z", lambda e: xr.Dataset(
        {"loss": (("alpha",), np.array([0.1, 0.2, 0.3]))}, coords={"alpha": [0.0, 0.5, 1.0]},
        attrs={"experiment": str(e)}).to_zarr(e / "s.zarr", mode="w", consolidated=False))[0]
    assert "extra" in broken("f", lambda e: (e / "runs/sgd/resume.pt").write_bytes(b"x"))[0]
