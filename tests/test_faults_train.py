"""Faults in an experiment directory: kills, damaged files, concurrent writers, full and
read-only disks. Each one ends in a correct result or in one line naming the file and the fix
(exit code 2, no traceback), and the fix it names works."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import lossurf
from lossurf.config import load_config
from lossurf.engine import prepare_experiment, train_experiment
from lossurf.errors import LossurfError
from lossurf.runs import ExperimentLayout, MetricsLog, atomic_write_bytes, metrics_columns, remove_temporaries
from lossurf.train import epoch_order, order_hash

TINY = {
    "name": "faults",
    "data": {"name": "digits", "max_train": 64, "max_test": 32},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "seeds": [0],
    "epochs": 3,
    "batch_size": 16,
    "eval_subset": 32,
    "checkpoint_every": 1,
    "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.01}],
}


class Kill(Exception):
    """Stands for a SIGKILL between two epochs (the state on disk is the same)."""


def kill_after(run: str, epoch: int):
    def report(name, done, epochs, row):
        if name == run and done == epoch:
            raise Kill

    return report


def write_config(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **overrides}))
    return path


def lossurf_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process (the tests that need one: a second process,
    or what the console shows, e.g. a warning; the others use the in-process ``cli`` below,
    the same ``main()``, because each fresh process costs seconds of imports)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lossurf.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


@pytest.fixture
def run_cli(cli):
    """``lossurf`` in this process: ``run_cli(*args)`` -> CompletedProcess-like result."""

    def run(*args) -> subprocess.CompletedProcess:
        code, out, err = cli(*args)
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def same_files(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def flip_last_byte(path: Path) -> None:
    """Change one weight byte: the file stays well-formed safetensors (its header is intact)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted, finished experiment (its config file beside it)."""
    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "tiny.yaml")
    train_experiment(load_config(config), root / "exp")
    return config, root / "exp"


def copy_of(reference_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "exp"
    shutil.copytree(reference_dir, out)
    (out / ".lossurf.lock").unlink(missing_ok=True)
    return out


# --- 1. metrics are typed and survive damage -------------------------------------------------


def test_metrics_read_back_typed(reference):
    _, out = reference
    table = lossurf.load_experiment(out).metrics("sgd")
    assert list(table["epoch"]) == [0, 1, 2, 3]
    assert table["epoch"].dtype.kind == "i" and table["gradient_evaluations"].dtype.kind == "i"
    assert table["train_loss"].dtype.kind == "f" and table["lr"].dtype.kind == "f"
    assert math.isnan(table["batch_loss"].iloc[0])  # epoch 0 has no training batches
    assert list(table["optimizer"]) == ["sgd"] * 4
    assert table["order_hash"].iloc[1] == order_hash(epoch_order(0, 1, 64))
    log = MetricsLog.read(ExperimentLayout(out).metrics("sgd"))
    assert isinstance(log.rows[1]["train_loss"], float) and isinstance(log.rows[1]["epoch"], int)
    # Read back, the values are the ones written (repr of a float round-trips exactly).
    assert log.rows[1]["train_loss"] == table["train_loss"].iloc[1]


def test_resumed_progress_formats_typed_rows(reference, tmp_path):
    # The issue: a run resumed after a kill handed the progress bar strings read from the CSV.
    from lossurf.progress import training_progress

    config, _ = reference
    with pytest.raises(Kill):
        train_experiment(load_config(config), tmp_path, report=kill_after("sgd", 1))
    with training_progress(True) as report:
        statuses = train_experiment(load_config(config), tmp_path, report=report)
    assert all(s["status"] == "finished" for s in statuses.values())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"epoch,optimizer\n0,sgd\n", "its header is not that of a metrics file"),
        (b"\xff\xfe garbage", "not UTF-8 text"),
        (",".join(metrics_columns()).encode() + b"\nzero,sgd,0.1,1,1,1,1,nan,0,0,0,\n", "line 2"),
        (",".join(metrics_columns()).encode() + b"\n0,sgd,0.1\n",
         f"line 2: 3 cells, expected {len(metrics_columns())}"),
    ],
)
def test_a_damaged_metrics_file_is_named(tmp_path, content, message):
    path = tmp_path / "metrics.csv"
    path.write_bytes(content)
    with pytest.raises(LossurfError, match="metrics.csv is corrupted") as error:
        MetricsLog.read(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_a_truncated_metrics_file_of_a_running_run_loses_no_rows(reference, tmp_path):
    config, ref = reference
    with pytest.raises(Kill):
        train_experiment(load_config(config), tmp_path, report=kill_after("sgd", 2))
    metrics = ExperimentLayout(tmp_path).metrics("sgd")
    text = metrics.read_bytes()
    metrics.write_bytes(text[: len(text) // 2])  # cut mid-row: epochs 1 and 2 lost from the file
    train_experiment(load_config(config), tmp_path)
    timings = ["wall_time", "eval_time", "checkpoint_time"]  # vary from run to run
    resumed = lossurf.load_experiment(tmp_path).metrics("sgd").drop(columns=timings)
    expected = lossurf.load_experiment(ref).metrics("sgd").drop(columns=timings)
    assert resumed.equals(expected)
    assert same_files(ExperimentLayout(tmp_path).checkpoint("sgd", None), ExperimentLayout(ref).checkpoint("sgd", None))


def test_damaged_metrics_of_a_finished_run_are_refused_then_recreated(reference, tmp_path):
    config, ref = reference
    out = copy_of(ref, tmp_path)
    path = ExperimentLayout(out).metrics("adam")
    path.write_text(path.read_text().replace("adam", "adan", 1))  # still parses: only the hash tells
    with pytest.raises(LossurfError, match=r"metrics.csv is corrupted \(its sha256 differs.*--out .*recreates it"):
        lossurf.load_experiment(out).metrics("adam")
    statuses = train_experiment(load_config(config), out)
    assert statuses["adam"]["redone"] == "metrics.csv differs from the sha256 recorded when it was written"
    assert "redone" not in statuses["sgd"]
    timings = ["wall_time", "eval_time", "checkpoint_time"]  # vary from run to run
    again = lossurf.load_experiment(out).metrics("adam").drop(columns=timings)
    assert again.equals(lossurf.load_experiment(ref).metrics("adam").drop(columns=timings))


# --- 2, 3. hashes checked on read; the fix named is the fix that works ----------------------


def test_flipped_final_weights_are_refused_and_train_recreates_them(reference, tmp_path):
    _, ref = reference
    out = copy_of(ref, tmp_path)
    final = ExperimentLayout(out).checkpoint("adam", None)
    flip_last_byte(final)
    proc = lossurf_cli("distance", out, "adam", "init")
    fix = f"`lossurf train {out / 'experiment.yaml'} --out {out}` recreates it"
    assert_user_error(proc, f"checkpoint {final} is corrupted", fix)
    # The fix, exactly as printed.
    proc = lossurf_cli("train", out / "experiment.yaml", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "run adam was finished, but final.safetensors differs" in proc.stderr
    assert "adam" in proc.stdout and "finished" in proc.stdout
    assert same_files(final, ExperimentLayout(ref).checkpoint("adam", None))
    assert lossurf.load_experiment(out).resolve("adam").path == final


def test_a_damaged_run_retrains_with_its_recorded_threads_to_the_same_bytes(tmp_path, monkeypatch):
    # conv layers round differently at another thread count: the retrain must use the first's
    config = load_config(write_config(
        tmp_path / "cnn.yaml", model={"name": "cnn-small", "options": {"batch_norm": True}},
        epochs=1, batch_size=64, runs=[{"optimizer": "adam", "lr": 0.01}]))
    monkeypatch.setenv("LOSSURF_THREADS", "1")
    train_experiment(config, tmp_path / "ref")
    layout = ExperimentLayout(tmp_path / "ref")
    assert lossurf.runs.read_json(layout.run_info("adam"))["threads"] == 1
    out = copy_of(tmp_path / "ref", tmp_path)
    monkeypatch.setenv("LOSSURF_THREADS", "2")
    train_experiment(config, tmp_path / "two")  # the same run at 2 threads: other bytes
    assert not same_files(ExperimentLayout(tmp_path / "two").checkpoint("adam", None),
                          layout.checkpoint("adam", None))
    flip_last_byte(ExperimentLayout(out).checkpoint("adam", None))
    assert "redone" in train_experiment(config, out)["adam"]
    assert same_files(ExperimentLayout(out).checkpoint("adam", None), layout.checkpoint("adam", None))


@pytest.mark.parametrize("content", ["", '{"name": "ad', "[]"])
def test_a_damaged_run_json_of_a_finished_run_is_written_again(reference, tmp_path, content):
    config, ref = reference
    out = copy_of(ref, tmp_path)
    path = ExperimentLayout(out).run_info("adam")
    original = path.read_bytes()
    path.write_text(content)
    assert "redone" not in train_experiment(load_config(config), out)["adam"]
    assert path.read_bytes() == original
    path.unlink()
    train_experiment(load_config(config), out)
    assert path.read_bytes() == original


def test_weights_of_another_architecture_are_named_with_the_file(reference, run_cli, tmp_path):
    from lossurf.models import build
    from lossurf.config import ModelSpec
    from lossurf.runs import save_weights

    _, ref = reference
    out = copy_of(ref, tmp_path)
    final = ExperimentLayout(out).checkpoint("adam", None)
    other = build(ModelSpec(name="mlp", options={"hidden": [8]}), seed=0).state_dict()
    digest = save_weights(final, other)  # its record edited to match: only the shapes tell
    status = lossurf.runs.read_json(ExperimentLayout(out).status("adam"))
    status["checkpoints"]["final.safetensors"] = digest
    lossurf.runs.write_json(ExperimentLayout(out).status("adam"), status)
    proc = run_cli("surface", "line", out, "--from", "init", "--to", "adam", "--steps", "3",
                   "--no-progress")
    assert_user_error(proc, f"{final} holds weights of another architecture than this "
                            "experiment's mlp (key 'layers.fc1.weight' is (8, 64), not (16, 64)); "
                            f"delete it: `lossurf train {out / 'experiment.yaml'} --out {out}` "
                            "recreates it")


def test_another_experiment_in_the_directory_names_what_differs(reference, run_cli, tmp_path):
    _, ref = reference
    out = copy_of(ref, tmp_path)
    runs = [{"optimizer": "sgd", "lr": 0.2}, {"optimizer": "adam", "lr": 0.01}]
    changed = write_config(tmp_path / "changed.yaml", epochs=4, runs=runs)
    proc = run_cli("train", changed, "--out", out, "--no-progress")
    assert_user_error(proc, f"{out} already holds a different experiment (it differs in epochs 3 "
                            "-> 4, runs); pass another --out or delete that directory")


def test_missing_final_weights_are_not_finished(reference, tmp_path):
    config, ref = reference
    out = copy_of(ref, tmp_path)
    final = ExperimentLayout(out).checkpoint("sgd", None)
    final.unlink()
    with pytest.raises(LossurfError, match=r"recorded as finished but .*final.safetensors is missing; `lossurf train"):
        lossurf.load_experiment(out).resolve("sgd")
    statuses = train_experiment(load_config(config), out)
    assert statuses["sgd"]["redone"] == "final.safetensors is missing"
    assert same_files(final, ExperimentLayout(ref).checkpoint("sgd", None))


def test_flipped_epoch_checkpoint_and_init_are_refused_and_repaired(reference, tmp_path):
    config, ref = reference
    out = copy_of(ref, tmp_path)
    layout = ExperimentLayout(out)
    flip_last_byte(layout.checkpoint("sgd", 2))
    flip_last_byte(layout.init(0))
    experiment = lossurf.load_experiment(out)
    with pytest.raises(LossurfError, match=r"epoch-0002.safetensors is corrupted \(its sha256"):
        experiment.resolve("sgd:epoch=2")
    with pytest.raises(LossurfError, match=r"init.safetensors is corrupted \(its sha256"):
        experiment.resolve("init")
    with pytest.raises(LossurfError, match=r"init.safetensors is corrupted"):
        experiment.weights("adam", 0)
    train_experiment(load_config(config), out)
    for path in (layout.checkpoint("sgd", 2), layout.init(0)):
        assert same_files(path, ExperimentLayout(ref) .root / path.relative_to(out))
    assert torch.equal(experiment.resolve("sgd:epoch=2").weights["layers.out.weight"],
                       lossurf.load_experiment(ref).weights("sgd", 2)["layers.out.weight"])


def test_a_damaged_checkpoint_of_a_running_run_restarts_it(reference, tmp_path):
    config, ref = reference
    with pytest.raises(Kill):
        train_experiment(load_config(config), tmp_path, report=kill_after("sgd", 2))
    layout = ExperimentLayout(tmp_path)
    flip_last_byte(layout.checkpoint("sgd", 1))  # before the resume point: never rewritten by resuming
    statuses = train_experiment(load_config(config), tmp_path)
    assert statuses["sgd"]["redone"] == "epoch-0001.safetensors differs from the sha256 recorded when it was written"
    for epoch in (1, None):
        assert same_files(layout.checkpoint("sgd", epoch), ExperimentLayout(ref).checkpoint("sgd", epoch))


# --- 4. one writer per directory --------------------------------------------------------------

_HOLDER = """
import pathlib, sys, time
from lossurf.config import load_config
from lossurf.engine import train_experiment

def report(run, epoch, epochs, row):
    if epoch == 1:
        pathlib.Path(sys.argv[3]).write_text("ready")
        time.sleep(300)

train_experiment(load_config(sys.argv[1]), sys.argv[2], report=report)
"""


def test_a_second_writer_is_refused_and_a_killed_ones_lock_is_taken_over(run_cli, reference, tmp_path):
    config, ref = reference
    out, ready = tmp_path / "exp", tmp_path / "ready"
    first = subprocess.Popen([sys.executable, "-c", _HOLDER, str(config), str(out), str(ready)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), first.communicate(timeout=5)
        proc = run_cli("train", config, "--out", out, "--no-progress")
        assert_user_error(proc, f"experiment directory {out} is in use by pid {first.pid}",
                          "wait for it to finish, or pass another --out")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    proc = run_cli("train", config, "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert same_files(ExperimentLayout(out).checkpoint("adam", None), ExperimentLayout(ref).checkpoint("adam", None))


# --- 5. damaged files: one line naming the file and the fix, and the fix works ---------------


def _torch_bytes(value) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


# (file relative to the experiment, new content, message, does deleting the file fix it)
DAMAGE = [
    ("runs/sgd/resume.pt", b"", "resume.pt is corrupted (empty file); delete it and run the same "
                                "command again"),
    ("runs/sgd/resume.pt", b"neither a zip nor a pickle", "resume.pt is corrupted ("),
    ("runs/sgd/resume.pt", _torch_bytes([1, 2]), "resume.pt is corrupted (holds a list, not a dict)"),
    ("runs/sgd/resume.pt", _torch_bytes({"epoch": 1, "model": {}, "optimizer": {}, "bogus": 1}),
     "resume.pt is corrupted ("),
    ("seeds/seed-0/orders.json", b"\xff\xfe{}", "orders.json is corrupted (not UTF-8 text); delete it"),
    ("seeds/seed-0/orders.json", b"[1, 2]", "orders.json is corrupted (holds a list, not a dict)"),
    ("seeds/seed-0/orders.json", b'{"1": 5}', "orders.json is corrupted (not epoch: hash pairs)"),
    ("seeds/seed-0/init.json", b"{", "init.json is corrupted (Expecting"),
    ("runs/sgd/status.json", b"\xff", "status.json is corrupted (not UTF-8 text); delete it"),
    ("runs/sgd/status.json", b'{"status": "finished"}', "status.json is corrupted (not a run status record)"),
    ("runs/sgd/status.json", b'{"status": "running", "epochs_done": 1, "checkpoints": {"../../x": "0"}}',
     "status.json is corrupted (not a run status record)"),
]


@pytest.fixture(scope="module")
def interrupted(reference, tmp_path_factory):
    """The reference config, killed after sgd's epoch 1."""
    config, _ = reference
    out = tmp_path_factory.mktemp("interrupted") / "exp"
    with pytest.raises(Kill):
        train_experiment(load_config(config), out, report=kill_after("sgd", 1))
    return out


@pytest.mark.parametrize(("name", "content", "message"), DAMAGE, ids=[f"{d[0]}-{i}" for i, d in enumerate(DAMAGE)])
def test_a_damaged_file_is_one_line_and_deleting_it_fixes_it(run_cli, reference, interrupted, tmp_path, name, content, message):
    config, ref = reference
    out = copy_of(interrupted, tmp_path)
    (out / name).write_bytes(content)
    proc = run_cli("train", config, "--out", out, "--no-progress")
    assert_user_error(proc, str(out / name), message)
    (out / name).unlink()  # the fix the message names
    train_experiment(load_config(config), out)
    for run in ("sgd", "adam"):
        assert same_files(ExperimentLayout(out).checkpoint(run, None), ExperimentLayout(ref).checkpoint(run, None))


@pytest.mark.parametrize(
    ("content", "train_message", "read_message"),
    [
        (b"\xff\xfename: x\n", "experiment.yaml is corrupted (not UTF-8 text)", "experiment.yaml is corrupted (not UTF-8 text)"),
        (b"- 1\n- 2\n", "experiment.yaml is corrupted (not a valid experiment config)", "must hold a mapping of fields"),
    ],
)
def test_a_damaged_experiment_yaml(run_cli, reference, tmp_path, content, train_message, read_message):
    config, ref = reference
    out = copy_of(ref, tmp_path)
    (out / "experiment.yaml").write_bytes(content)
    assert_user_error(run_cli("train", config, "--out", out, "--no-progress"), train_message)
    assert_user_error(run_cli("distance", out, "sgd", "adam"), read_message)
    shutil.copy(ref / "experiment.yaml", out / "experiment.yaml")
    assert run_cli("distance", out, "sgd", "adam").returncode == 0


def test_an_edited_order_hash_is_refused(reference, interrupted, tmp_path):
    config, _ = reference
    out = copy_of(interrupted, tmp_path)
    (out / "seeds/seed-0/orders.json").write_text('{"2": "0000000000000000"}')
    with pytest.raises(LossurfError, match="minibatch order of epoch 2 differs from the one recorded"):
        train_experiment(load_config(config), out)


# --- 6. --out that cannot be written ----------------------------------------------------------


def test_out_is_a_file(run_cli, reference, tmp_path):
    config, _ = reference
    out = tmp_path / "taken"
    out.write_text("keep me")
    assert_user_error(run_cli("train", config, "--out", out, "--no-progress"),
                      f"--out {out} is a file, not a directory")
    assert out.read_text() == "keep me"


def test_a_write_error_names_the_path_and_the_cause(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LossurfError, match=r"cannot write .*file/sub/a.json \(.*\): a file is in the way"):
        atomic_write_bytes(tmp_path / "file" / "sub" / "a.json", b"{}")


@pytest.fixture
def tmpfs(tmp_path):
    """A 200 KiB tmpfs mounted for the test (needs root and mount permission)."""
    from _mounts import tmpfs as mounted

    with mounted(tmp_path / "disk", "size=200k") as disk:
        yield disk


def test_full_disk_is_one_line_and_loses_nothing(run_cli, tmpfs, tmp_path):
    # hidden [128, 128]: about 100 KiB per checkpoint, so the 200 KiB disk fills during training.
    config = write_config(tmp_path / "big.yaml", model={"name": "mlp", "options": {"hidden": [128, 128]}},
                          runs=[{"optimizer": "sgd", "lr": 0.1}])
    out = tmpfs / "exp"
    proc = run_cli("train", config, "--out", out, "--no-progress")
    assert_user_error(proc, "(No space left on device): the disk is full; free some space")
    # What was written before the disk filled is intact: copied to a larger disk, it resumes.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    assert not [p for p in moved.rglob("*.tmp")], "a temporary file was left behind"
    train_experiment(load_config(config), moved)
    reference = tmp_path / "ref"
    train_experiment(load_config(config), reference)
    assert same_files(ExperimentLayout(moved).checkpoint("sgd", None), ExperimentLayout(reference).checkpoint("sgd", None))


def test_read_only_disk_refuses_writes_and_still_reads(run_cli, tmpfs, reference, tmp_path):
    config, _ = reference
    small = write_config(tmp_path / "small.yaml", epochs=1, checkpoint_every=1, runs=[{"optimizer": "sgd", "lr": 0.1}])
    out = tmpfs / "exp"
    assert run_cli("train", small, "--out", out, "--no-progress").returncode == 0
    done = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")
    assert_user_error(run_cli("train", small, "--out", out, "--no-progress"), "Read-only file system")
    assert run_cli("distance", out, "sgd", "init").returncode == 0


# --- 7. lazy minibatch-order hashes -----------------------------------------------------------


def test_a_huge_epoch_count_costs_nothing_up_front(reference, tmp_path):
    config = load_config(reference[0]).model_copy(update={"epochs": 10**9})
    prepare_experiment(config, tmp_path)
    layout = ExperimentLayout(tmp_path)
    assert layout.init(0).is_file() and not layout.orders(0).exists()
    with pytest.raises(Kill):
        train_experiment(config, tmp_path, report=kill_after("sgd", 2))
    hashes = {str(e): order_hash(epoch_order(0, e, 64)) for e in (1, 2)}
    assert lossurf.runs.read_json(layout.orders(0)) == hashes


def test_an_old_directory_with_every_order_hash_still_trains(reference, tmp_path):
    config, ref = reference
    out = tmp_path / "exp"
    prepare_experiment(load_config(config), out)
    everything = {str(e): order_hash(epoch_order(0, e, 64)) for e in range(1, 4)}
    lossurf.runs.write_json(ExperimentLayout(out).orders(0), everything)
    ExperimentLayout(out).init_record(0).unlink()  # old directories have no init.json either
    train_experiment(load_config(config), out)
    assert lossurf.runs.read_json(ExperimentLayout(out).orders(0)) == everything
    assert same_files(ExperimentLayout(out).checkpoint("adam", None), ExperimentLayout(ref).checkpoint("adam", None))


# --- 8. batch norm and a minibatch of one example ---------------------------------------------


def test_batch_norm_with_a_last_minibatch_of_one_is_refused_before_writing(run_cli, tmp_path):
    config = write_config(tmp_path / "bn.yaml", data={"name": "digits", "max_train": 65, "max_test": 32},
                          model={"name": "mlp", "options": {"batch_norm": True}}, batch_size=32, epochs=1)
    out = tmp_path / "exp"
    proc = run_cli("train", config, "--out", out, "--no-progress")
    assert_user_error(proc, "batch_size 32 leaves a minibatch of one example in every epoch (65 training examples)",
                      "pick a batch_size that does not (e.g. 33)")
    assert not (out / "experiment.yaml").exists()
    # --check says so too, as the training would
    proc = run_cli("train", config, "--check")
    assert_user_error(proc, "batch_size 32 leaves a minibatch of one example in every epoch (65 training examples)",
                      "pick a batch_size that does not (e.g. 33)")
    # The suggested size trains.
    config = write_config(tmp_path / "bn.yaml", data={"name": "digits", "max_train": 65, "max_test": 32},
                          model={"name": "mlp", "options": {"batch_norm": True}}, batch_size=33, epochs=1)
    assert train_experiment(load_config(config), out)["sgd"]["status"] == "finished"


def test_batch_norm_on_images_trains_on_one_example(tmp_path):
    # BatchNorm2d has 64 values per channel in one 8x8 image: nothing to refuse.
    config = write_config(tmp_path / "bn.yaml", data={"name": "digits", "max_train": 65, "max_test": 32},
                          model={"name": "cnn-small", "options": {"batch_norm": True}}, batch_size=32, epochs=1,
                          runs=[{"optimizer": "sgd", "lr": 0.1}])
    assert train_experiment(load_config(config), tmp_path)["sgd"]["status"] == "finished"


# --- 9. file modes and temporary files --------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == mode


def test_experiment_files_are_0644(reference):
    _, out = reference
    for name in ("experiment.yaml", "manifest.json", "seeds/seed-0/init.safetensors",
                 "runs/sgd/metrics.csv", "runs/sgd/final.safetensors", "runs/sgd/status.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644 & ~_umask(), name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_temporary_files_left_by_a_kill_are_removed_when_reopened(reference, tmp_path):
    config, ref = reference
    out = copy_of(ref, tmp_path)
    left = [out / ".manifest.json.a1b2c3d4.tmp", out / "seeds/seed-0/.init.safetensors.zz_9x8y7.tmp",
            out / "runs/sgd/.resume.pt.q1w2e3r4.tmp"]
    kept = [out / ".hidden", out / "surfaces/line.zarr/.zarray", out / "runs/sgd/.notes.tmp"]
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    train_experiment(load_config(config), out)
    assert [p for p in left if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert remove_temporaries(tmp_path / "missing") == []
