"""Many runs at once: ``lossurf train --jobs N`` (the ``processes`` backend) against one at a time.

The real command trains an experiment of four runs mixing optimizers (sgd, adam, an RK2 method
and an sgd -> adam switch) with ``--jobs 3``, with ``LOSSURF_THREADS=1`` (set by conftest for
every command): every weight and metrics cell but the timing columns, and every status, must
equal, bitwise, what the same command trains one run after the other. Killing the driver alone
(SIGKILL to its pid, not its group) must take its workers with it, and the rerun must end
bitwise equal; a Ctrl-C to the group exits 130 with one line and leaves no worker behind.
The backend itself is checked in process: results, errors as themselves, a dying worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from _kill import command_env, compare_trees, copy_tree, files, lossurf_command, run
from lossurf.backends import ProcessBackend, make_backend
from lossurf.errors import LossurfError
from lossurf.reaper import descendants

CONFIG = {
    "name": "concurrent",
    "data": {"name": "digits", "max_train": 200, "max_test": 100},
    "model": {"name": "cnn-small"},
    "seeds": [0],
    "epochs": 3,
    "batch_size": 20,
    "eval_subset": 100,
    "checkpoint_every": 1,
    "runs": [
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "adam", "lr": 0.001},
        {"optimizer": "rk2-heun", "lr": 0.2},
        {"optimizer": "sgd", "lr": 0.1, "switch": {"to": "adam", "lr": 0.001, "at": 0.5}},
    ],
}
RUNS = ["sgd", "adam", "rk2-heun", "sgd-to-adam-50"]
TRAIN = ["train", "experiment.yaml", "--out", "exp", "--no-progress"]
MESSAGE = "interrupted; run the same command again to resume where it stopped"


def _differences(ref: Path, got: Path) -> list[str]:
    """Every difference but the command line recorded in manifest.json (it names --jobs)."""
    manifest = "exp/manifest.json"
    problems = [p for p in compare_trees(ref, got) if not p.startswith(f"{manifest}: ")]
    a, b = (json.loads((root / manifest).read_text()) for root in (ref, got))
    a.pop("command"), b.pop("command")
    return problems + ([] if a == b else [f"{manifest} differs: {a} vs {b}"])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone(pids: list[int], within: float = 20.0) -> list[int]:
    """The pids of ``pids`` still alive after waiting up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concurrent")
    (root / "base").mkdir()
    (root / "base" / "experiment.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def reference(base) -> Path:
    """The experiment trained one run after the other, in one process (today's path)."""
    work = copy_tree(base / "base", base / "ref")
    done = run(TRAIN, work)
    assert done.code == 0 and done.clean(), done.stderr[-3000:]
    return work


@pytest.mark.slow
def test_jobs_3_trains_every_run_bitwise_as_one_at_a_time(base, reference):
    work = copy_tree(base / "base", base / "jobs3")
    done = run(TRAIN + ["--jobs", "3"], work)
    assert done.code == 0 and done.clean(), done.stderr[-3000:]
    for name in RUNS:  # one line per run when it ends, as the ray path prints
        assert f"{name:<28} finished" in done.stdout
    problems = _differences(reference, work)
    assert not problems, "\n".join(problems)
    # Non-vacuous: the trees hold every run's weights and metrics, and they were compared.
    assert sorted(p.name for p in (work / "exp" / "runs").iterdir()) == sorted(RUNS)
    assert all((work / "exp" / "runs" / r / "final.safetensors").is_file() for r in RUNS)


@pytest.mark.slow
def test_killing_the_driver_kills_its_workers_and_the_rerun_is_bitwise(base, reference):
    work = copy_tree(base / "base", base / "killed")
    args = lossurf_command() + TRAIN + ["--jobs", "3"]
    proc = subprocess.Popen(args, cwd=work, env=command_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        started = files("exp/runs/*/epoch-0001.safetensors")
        while proc.poll() is None and not started(work, 0.0):
            time.sleep(0.005)
        workers = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, not its process group
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the driver ended before it was killed"
    assert len(workers) >= 2, f"expected worker processes, found {workers}"
    assert not _gone(workers), "worker processes outlived the killed driver"
    finals = [r for r in RUNS if (work / "exp" / "runs" / r / "final.safetensors").is_file()]
    assert len(finals) < len(RUNS), "every run had finished: the kill landed too late"
    again = run(TRAIN + ["--jobs", "3"], work)
    assert again.code == 0 and again.clean(), again.stderr[-3000:]
    problems = _differences(reference, work)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line_and_stops_the_workers(base):
    work = copy_tree(base / "base", base / "sigint")
    out_path = work.with_name("sigint.stderr")
    with out_path.open("w") as err:
        proc = subprocess.Popen(lossurf_command() + TRAIN + ["--jobs", "2"], cwd=work,
                                env=command_env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            started = files("exp/runs/*/epoch-0001.safetensors")
            while proc.poll() is None and not started(work, 0.0):
                time.sleep(0.005)
            workers = descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    stderr = out_path.read_text()
    assert code == 130, stderr[-3000:]
    assert workers and not _gone(workers), "worker processes outlived the interrupt"
    assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr[-3000:]
    assert stderr.strip().splitlines() == [MESSAGE]


@pytest.mark.slow
def test_an_error_in_a_worker_is_the_same_one_line_as_in_process(reference, tmp_path):
    lines = {}
    for jobs in ("1", "2"):
        work = copy_tree(reference, tmp_path / f"broken-{jobs}")
        (work / "exp" / "runs" / "adam" / "status.json").write_text("{not json")
        done = run(TRAIN + ["--jobs", jobs], work)
        assert done.code == 2 and done.clean(), done.stderr[-3000:]
        lines[jobs] = done.stderr.strip().splitlines()
        assert len(lines[jobs]) == 1 and lines[jobs][0].startswith("error: "), lines[jobs]
        assert "status.json" in lines[jobs][0]
        # The workers name the directory by its absolute path (as the ray backend's do).
        lines[jobs] = [line.replace(f"{work.resolve()}/", "") for line in lines[jobs]]
    assert lines["1"] == lines["2"]


# ---- the backend in process --------------------------------------------------------------


class _Fail:
    """Raises on item ``bad``: a user error, or a bug (``ZeroDivisionError``)."""

    def __init__(self, bad: int, user: bool) -> None:
        self.bad, self.user = bad, user

    def __call__(self, item: int) -> int:
        if item == self.bad:
            if self.user:
                raise LossurfError(f"item {item} is bad; pass another")
            return item // 0
        return item


def _die(item: int) -> int:
    if item == 1:
        os._exit(7)
    return item


@pytest.fixture(scope="module")
def pool():
    with ProcessBackend(2, threads=1) as backend:
        yield backend


def test_the_pool_yields_every_result_and_reuses_its_workers(pool):
    assert sorted(pool.map(abs, [-3, -1, 2, -7, 5])) == [1, 2, 3, 5, 7]
    first = set(pool.stats.workers)
    assert len(first) == 2 and len(pool.stats.task_seconds) == 5
    assert sorted(pool.map(abs, [-4])) == [4]
    assert pool.stats.workers <= first  # the next map runs on the same processes


def test_a_user_error_in_a_worker_is_the_same_lossurf_error(pool):
    with pytest.raises(LossurfError) as caught:
        list(pool.map(_Fail(3, user=True), range(6)))
    assert str(caught.value) == "item 3 is bad; pass another"
    assert not getattr(caught.value, "__notes__", None)  # no worker traceback soup


def test_a_bug_in_a_worker_keeps_its_type_and_the_worker_traceback(pool):
    with pytest.raises(ZeroDivisionError) as caught:
        list(pool.map(_Fail(2, user=False), range(4)))
    assert "raised in worker process" in caught.value.__notes__[0]
    assert "item // 0" in caught.value.__notes__[0]


def test_a_dying_worker_is_a_user_error_naming_its_item(pool):
    with pytest.raises(LossurfError, match=r"worker process died while working on 1 \(exit code 7"):
        list(pool.map(_die, [0, 1, 2]))
    assert sorted(pool.map(abs, [-1, -2])) == [1, 2]  # the pool starts a new worker


def test_a_function_that_does_not_pickle_is_a_user_error(pool):
    with pytest.raises(LossurfError, match="cannot send function to worker processes"):
        list(pool.map(lambda x: x, [1]))


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_bad_job_counts_name_the_problem(jobs):
    with pytest.raises(LossurfError, match="jobs must be an integer >= 1"):
        make_backend("processes", jobs=jobs)


def test_threads_per_worker_default_to_the_cores_shared_out(monkeypatch):
    monkeypatch.delenv("LOSSURF_THREADS", raising=False)
    monkeypatch.setattr("lossurf.threads.usable_cores", lambda: 16)
    assert ProcessBackend(4).threads == 4 and ProcessBackend(32).threads == 1
    assert ProcessBackend(4, threads=3).threads == 3
    monkeypatch.setenv("LOSSURF_THREADS", "2")
    assert ProcessBackend(4).threads == 2


def test_the_api_takes_jobs_but_not_with_a_backend(tmp_path):
    from lossurf.config import parse_config
    from lossurf.engine import train_experiment

    config = parse_config(CONFIG)
    with pytest.raises(LossurfError, match="jobs must be an integer >= 1, got 0"):
        train_experiment(config, tmp_path / "a", jobs=0)
    with pytest.raises(LossurfError, match="pass backend= or jobs=, not both"):
        train_experiment(config, tmp_path / "b", jobs=2, backend=make_backend("local"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("value", ["0", "-1"])
@pytest.mark.parametrize("command", ["train", "run"])
def test_the_cli_refuses_a_bad_job_count_in_one_line(cli, tmp_path, command, value):
    args = (["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")] if command == "train"
            else ["run", "optimizers", "--out", str(tmp_path / "o")])
    code, out, err = cli(*args, "--jobs", value)
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"error: --jobs must be at least 1, got {value}; pass how many runs to train at once, "
        "e.g. --jobs 4 (1 trains them one after the other)"
    ]
    assert not (tmp_path / "o").exists()


def test_the_cli_refuses_jobs_with_ray(cli, tmp_path):
    code, out, err = cli("train", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "o"),
                         "--jobs", "2", "--backend", "ray")
    assert code == 2
    line, = err.strip().splitlines()
    assert line.startswith("error: --jobs runs worker processes on this machine") and "drop --jobs" in line


@pytest.mark.slow
def test_a_recipe_trains_its_runs_with_jobs_as_without(tmp_path):
    """``lossurf run --jobs N`` reaches the recipes' training (their workers load the data),
    and one set of workers serves every experiment: the second starts no new process."""
    from _kill_commands import RUN_PRESET
    from lossurf.backends import ProcessBackend
    from lossurf.experiments.common import Context
    from lossurf.presets import load_preset

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(RUN_PRESET, sort_keys=False))
    preset = load_preset(tmp_path / "tiny.yaml")
    trained: dict = {}
    workers = []
    with ProcessBackend(2) as pool:
        for backend in (None, pool):
            ctx = Context(preset=preset, out=tmp_path / f"out{backend is None}",
                          recipe="optimizers", progress=False, backend=backend)
            for methods, seed in ((["sgd", "adam", "rk2-heun"], 0), (["adadelta", "adam"], 1)):
                config = ctx.config(methods=methods, seeds=[seed])
                exp, _ = ctx.train(config, methods)
                trained.setdefault(seed, []).append(exp.path)
                assert all(exp.status(r)["status"] == "finished" for r in methods)
                if backend is not None:
                    workers.append(pool.stats.workers)
    assert len(workers[0]) == 2 and workers[1] <= workers[0]  # the same processes, reused
    for seed, (alone, at_once) in trained.items():
        problems = compare_trees(alone, at_once)
        assert not problems, "\n".join(problems)


def test_the_cli_names_jobs_for_the_processes_backend(cli, tmp_path):
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    code, out, err = cli("train", str(tmp_path / "e.yaml"), "--out", str(tmp_path / "o"),
                         "--backend", "processes")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --backend takes local or ray; for runs trained at once in worker processes, "
        "pass --jobs N to lossurf train or lossurf run"
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_jobs_on_cuda_trains_every_run_to_the_noise_of_one_at_a_time(tmp_path):
    """On a GPU the workers share the device; each run ends where it ends alone, to cuDNN's
    run-to-run noise (its weight-gradient kernels are not deterministic): strict fp32, and a
    relative distance far below what another batch order or initialization gives (O(1))."""
    import torch

    import lossurf
    from lossurf.config import parse_config

    config = parse_config({**CONFIG, "device": "cuda", "epochs": 2, "precision": "fp32"})
    lossurf.train_experiment(config, tmp_path / "one")
    lossurf.train_experiment(config, tmp_path / "many", jobs=2)
    one, many = lossurf.load_experiment(tmp_path / "one"), lossurf.load_experiment(tmp_path / "many")
    for run_name in RUNS:
        assert many.status(run_name)["status"] == "finished"
        a, b = one.weights(run_name, "final"), many.weights(run_name, "final")
        keys = [k for k in a if a[k].is_floating_point()]
        diff = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys) ** 0.5
        norm = sum(float(a[k].double().pow(2).sum()) for k in keys) ** 0.5
        assert diff / norm < 1e-2, (run_name, diff / norm)


def test_a_recipe_takes_jobs_or_a_backend_not_both(tmp_path):
    from lossurf.backends import LocalBackend
    from lossurf.experiments import run_recipe

    with pytest.raises(LossurfError, match=r"pass backend= or jobs=, not both"):
        run_recipe("init", "digits", tmp_path, progress=False, jobs=2, backend=LocalBackend())
    assert not any(tmp_path.iterdir())  # refused before anything is written
