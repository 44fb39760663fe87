"""The Ray backend on a real local Ray instance (2 CPUs, no dashboard), against the local one.

Training and surfaces computed as Ray tasks must be bitwise identical to the same computed in
this process; a worker killed with SIGKILL mid-run is retried and changes nothing; a task's
LossurfError stops the map at once and reaches the caller as itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'lossurf[ray]')")

import lossurf  # noqa: E402
import lossurf.surface  # noqa: E402
from lossurf.backends import RayBackend, make_backend  # noqa: E402
from lossurf.config import parse_config  # noqa: E402
from lossurf.engine import train_experiment  # noqa: E402
from lossurf.errors import LossurfError  # noqa: E402
from lossurf.runs import ExperimentLayout, read_json  # noqa: E402

pytestmark = pytest.mark.ray

# The helpers below run on Ray workers, which cannot import this test module: ship it by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def backend():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield RayBackend()  # joins the instance started above
    finally:
        ray.shutdown()


def tiny_config(epochs: int = 2):
    return parse_config({
        "name": "tiny-ray",
        "data": {"name": "digits", "max_train": 128, "max_test": 64},
        "model": {"name": "mlp"},
        "seeds": [0],
        "epochs": epochs,
        "batch_size": 32,
        "eval_subset": 64,
        "checkpoint_every": 1,
        "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.001}],
    })


def assert_same_experiment(a: Path, b: Path) -> None:
    """Every weights file bytewise equal; metrics equal except wall time; same statuses."""
    la, lb = ExperimentLayout(a), ExperimentLayout(b)
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    assert any(f.name == "final.safetensors" for f in files)
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    experiment = lossurf.load_experiment(a)
    for run in experiment.runs:
        timings = ["wall_time", "eval_time", "checkpoint_time"]
        ta = experiment.metrics(run).drop(columns=timings)
        tb = lossurf.load_experiment(b).metrics(run).drop(columns=timings)
        assert list(ta["epoch"]) == list(range(experiment.config.epochs + 1))
        assert ta.equals(tb), run
        assert without_metrics_hash(read_json(la.status(run))) == without_metrics_hash(read_json(lb.status(run)))


def without_metrics_hash(status: dict) -> dict:
    """A status record less the metrics file's sha256 (the file holds wall times)."""
    if "status" in status:
        return {k: v for k, v in status.items() if k != "metrics_sha256"}
    return {name: without_metrics_hash(s) for name, s in status.items()}


@pytest.fixture(scope="module")
def trained(backend, tmp_path_factory):
    local = tmp_path_factory.mktemp("local")
    on_ray = tmp_path_factory.mktemp("ray")
    local_status = train_experiment(tiny_config(), local)
    reported = []
    ray_status = train_experiment(
        tiny_config(), on_ray, backend=backend, report=lambda *args: reported.append(args)
    )
    return local, on_ray, local_status, ray_status, reported


def test_training_on_ray_is_bitwise_the_local_training(trained, backend):
    local, on_ray, local_status, ray_status, reported = trained
    assert without_metrics_hash(ray_status) == without_metrics_hash(local_status)
    assert list(ray_status) == ["sgd", "adam"]
    assert all(s["status"] == "finished" for s in ray_status.values())
    assert_same_experiment(local, on_ray)
    # Both runs really ran as tasks, and the driver reported each run's last epoch once.
    assert sorted(r[0] for r in reported) == ["adam", "sgd"]
    assert all(r[1] == r[2] == 2 and "train_loss" in r[3] for r in reported)
    # Running again skips the finished runs (resume semantics are the local ones).
    assert train_experiment(tiny_config(), on_ray, backend=backend) == ray_status


def test_plane_on_ray_equals_local(trained, backend):
    local = trained[0]
    experiment = lossurf.load_experiment(local)
    model, data = experiment.model(), experiment.dataset()
    points = [experiment.weights("sgd", "init"), experiment.weights("sgd"), experiment.weights("adam")]
    options = dict(kind="barycentric", steps=3, subset=64, progress=False, chunk_points=3)
    here = lossurf.surface.plane(model, points, data, **options)
    there = lossurf.surface.plane(model, points, data, backend=backend, **options)
    assert here.identical(there)
    assert backend.stats.task_seconds and len(backend.stats.task_seconds) == 3  # one per row
    # The loss at the barycentric corner alpha=beta=0 is the first point's own loss.
    assert torch.isfinite(torch.as_tensor(here.loss.values)).all()


class _Interrupted(Exception):
    pass


class _StopAfter:
    """Passes ``n`` results of the inner backend on, then interrupts the caller (a Ctrl-C)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def map(self, fn, items):
        results = self.inner.map(fn, items)
        for _ in range(self.n):
            yield next(results)
        results.close()  # what a KeyboardInterrupt in the caller's loop does: cancel the rest
        raise _Interrupted


def test_an_interrupted_surface_store_resumes_on_ray(trained, backend, tmp_path):
    experiment = lossurf.load_experiment(trained[0])
    model, data = experiment.model(), experiment.dataset()
    start, end = experiment.weights("sgd", "init"), experiment.weights("adam")
    options = dict(steps=6, subset=64, progress=False, chunk_points=2)
    here = lossurf.surface.line(model, start, end, data, **options)
    store = tmp_path / "line.zarr"
    with pytest.raises(_Interrupted):
        lossurf.surface.line(model, start, end, data, store=store, backend=_StopAfter(backend, 1),
                             **options)
    import zarr

    assert zarr.open_group(str(store), mode="r")["computed"][...].sum() == 2  # one chunk landed
    resumed = lossurf.surface.line(model, start, end, data, store=store, backend=backend, **options)
    assert len(backend.stats.task_seconds) == 2  # only the two missing chunks ran
    for name in ("loss", "accuracy"):
        assert resumed[name].values.tobytes() == here[name].values.tobytes()


def test_a_function_that_does_not_pickle_is_a_user_error(backend):
    with pytest.raises(LossurfError, match="does not pickle.*module-level function"):
        list(backend.map(_Unpicklable(), [1]))


class _Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, item):
        return item


class _StallAfterFirstEpoch:
    """Wraps a run task: on ``target``'s first attempt, once epoch 1's resume state is saved,
    write the worker's pid to ``pidfile`` and stall, so the test can SIGKILL it mid-run."""

    def __init__(self, fn, target: str, pidfile: str) -> None:
        self.fn, self.target, self.pidfile = fn, target, pidfile

    def __call__(self, name):
        if name == self.target and not os.path.exists(self.pidfile):
            import lossurf.resume as resume

            write = resume.atomic_write_bytes  # what writes the resume state

            def write_then_stall(path, data):
                write(path, data)
                Path(self.pidfile).write_text(str(os.getpid()))
                time.sleep(120)

            resume.atomic_write_bytes = write_then_stall  # this worker process is killed anyway
        return self.fn(name)


class _Stalling:
    def __init__(self, inner, target: str, pidfile: str) -> None:
        self.inner, self.target, self.pidfile = inner, target, pidfile

    def map(self, fn, items):
        return self.inner.map(_StallAfterFirstEpoch(fn, self.target, self.pidfile), items)


def test_a_worker_killed_mid_run_is_retried_and_changes_nothing(trained, backend, tmp_path):
    local = trained[0]
    out, pidfile = tmp_path / "killed", tmp_path / "pid"
    result: dict = {}

    def train():
        try:
            result["status"] = train_experiment(
                tiny_config(), out, backend=_Stalling(backend, "adam", str(pidfile))
            )
        except BaseException as err:  # surfaced by the main thread below
            result["error"] = err

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.1)
    assert pidfile.exists(), f"the task never stalled: {result}"
    pid = int(pidfile.read_text())
    # The run is mid-way: epoch 1 saved, the final weights not yet.
    assert ExperimentLayout(out).resume_state("adam").is_file()
    assert not ExperimentLayout(out).checkpoint("adam", None).exists()
    os.kill(pid, signal.SIGKILL)
    thread.join(90)
    assert not thread.is_alive() and "error" not in result, result
    assert without_metrics_hash(result["status"]) == without_metrics_hash(trained[2])
    assert_same_experiment(local, out)


class _FailOn:
    """Fails on one item with a user error; the others take a while."""

    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __call__(self, item: int) -> int:
        if item == self.bad:
            raise LossurfError("data directory /nowhere does not exist on this worker; mount it")
        time.sleep(1.0)
        return item


def test_a_user_error_in_a_task_stops_the_map_as_itself(backend):
    began = time.monotonic()
    with pytest.raises(LossurfError, match="/nowhere does not exist") as caught:
        list(backend.map(_FailOn(0), range(8)))
    assert time.monotonic() - began < 10  # 8 one-second tasks on 2 CPUs would take 4 s more
    assert not isinstance(caught.value, ray.exceptions.RayError)
    assert any("Ray task" in note for note in caught.value.__notes__)


def test_a_missing_experiment_directory_on_a_worker_is_a_user_error(backend, tmp_path):
    from lossurf.distributed import TrainRunTask

    task = TrainRunTask(str(tmp_path / "not-shared"), tiny_config())
    with pytest.raises(LossurfError, match="not visible on worker .*shared|same path"):
        list(backend.map(task, ["sgd"]))


def test_map_yields_every_result_and_records_timings(backend):
    results = sorted(backend.map(abs, [-3, -1, 2]))
    assert results == [1, 2, 3]
    assert len(backend.stats.task_seconds) == 3 and backend.stats.wall_seconds > 0


def test_an_unreachable_cluster_names_the_fix(monkeypatch):
    def refuse(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(LossurfError, match="could not join the Ray cluster at 'auto'.*ray start"):
        make_backend("ray", address="auto")


def test_bad_options_name_the_problem(backend):
    with pytest.raises(LossurfError, match="num_cpus must be an integer >= 1"):
        RayBackend(num_cpus=0)
    with pytest.raises(LossurfError, match="num_gpus must be a number >= 0"):
        RayBackend(num_gpus=-1)
    with pytest.raises(LossurfError, match="bad option for the ray backend.*address"):
        make_backend("ray", adress="auto")
    with pytest.raises(LossurfError, match="unknown backend 'dask'.*local.*ray"):
        make_backend("dask")


def _closed_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_where_nothing_listens_fails_before_ray_init(monkeypatch):
    def never(**kwargs):  # ray.init retries such an address for minutes
        raise AssertionError("ray.init was reached")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", never)
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(LossurfError, match=rf"could not reach the Ray cluster at '{address}' \(.*\); start it"):
            make_backend("ray", address=address)
    for address in ("nonsense", "host:", ":6379", "host:99999"):
        with pytest.raises(LossurfError, match=r"is not auto, HOST:PORT or ray://HOST:PORT"):
            make_backend("ray", address=address)


def test_the_cli_reports_an_unreachable_address_and_writes_nothing(tmp_path):
    import subprocess

    import yaml

    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"name": "digits", "max_train": 64, "max_test": 32}, "model": {"name": "mlp"},
        "epochs": 1, "runs": [{"optimizer": "sgd", "lr": 0.1}],
    }))
    # The timeout only guards against the hang this test is about; it asserts no duration.
    done = subprocess.run(
        [sys.executable, "-c", "from lossurf.cli import main; main()", "train", str(config),
         "--out", str(tmp_path / "o"), "--backend", "ray", "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: could not reach the Ray cluster at '127.0.0.1:1'")
    assert not (tmp_path / "o").exists()


_DRIVER = """
import json, sys
from lossurf.backends import RayBackend
from lossurf.reaper import descendants
backend = RayBackend(local_cpus=1)
assert sorted(backend.map(abs, [-1, 2])) == [1, 2]
print(json.dumps(descendants(containing="ray")), flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
def test_a_killed_driver_leaves_no_ray_helpers_behind():
    import json
    import subprocess

    from test_reaper import alive, wait_gone

    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    helpers = json.loads(driver.stdout.readline())
    try:
        assert len(helpers) >= 3  # gcs_server, raylet, the agents, workers
        driver.kill()
        driver.wait()
        # Without the reaper Ray's dashboard and runtime-env agents linger ~60 s; the deadline
        # only bounds the wait.
        assert all(wait_gone(pid, 45) for pid in helpers), [p for p in helpers if alive(p)]
    finally:
        for pid in helpers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
