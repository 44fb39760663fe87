"""The training engine: shared initialization and minibatches, switching, divergence, resume."""

from __future__ import annotations

import math

import pytest
import torch

import lossurf
from lossurf.config import parse_config
from lossurf.engine import train_experiment
from lossurf.errors import LossurfError
from lossurf.train import epoch_order, order_hash, phase_at


def tiny_config(**overrides):
    raw = {
        "name": "tiny",
        "data": {"name": "digits", "max_train": 192, "max_test": 96},
        "model": {"name": "cnn-small", "options": {"batch_norm": True}},
        "seeds": [0],
        "epochs": 4,
        "batch_size": 32,
        "eval_subset": 64,
        "checkpoint_every": 2,
        "runs": [
            {"optimizer": "sgd", "lr": 0.1},
            {"optimizer": "adam", "lr": 0.001},
            {"optimizer": "rk2-heun", "lr": 0.2},
            {"optimizer": "sgd", "lr": 0.1, "switch": {"to": "adam", "lr": 0.001, "at": 0.5}},
        ],
    }
    raw.update(overrides)
    return parse_config(raw)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    statuses = train_experiment(tiny_config(), out)
    return out, statuses


def test_every_run_finishes_and_is_reopened(trained):
    out, statuses = trained
    assert all(s["status"] == "finished" for s in statuses.values())
    experiment = lossurf.load_experiment(out)
    assert experiment.runs == ["sgd", "adam", "rk2-heun", "sgd-to-adam-50"]
    model = experiment.model()
    model.load_state_dict(experiment.weights("adam", "final"))
    assert experiment.weights("adam", 2).keys() == experiment.weights("adam", "init").keys()
    table = experiment.metrics("adam")
    assert list(table["epoch"]) == [0, 1, 2, 3, 4]
    for column in ["train_loss", "train_accuracy", "test_loss", "test_accuracy", "distance_from_init",
                   "lr", "optimizer", "gradient_evaluations", "wall_time"]:
        assert column in table.columns
    # Training moved the weights and lowered the loss.
    assert table["distance_from_init"].iloc[-1] > 0
    assert table["train_loss"].iloc[-1] < table["train_loss"].iloc[0]


def test_runs_share_initialization_and_minibatches(trained):
    out, _ = trained
    experiment = lossurf.load_experiment(out)
    tables = {run: experiment.metrics(run) for run in experiment.runs}
    first = tables["sgd"]
    for run, table in tables.items():
        # Epoch 0 is the shared initialization: same loss, zero distance.
        assert table["train_loss"].iloc[0] == first["train_loss"].iloc[0], run
        assert table["distance_from_init"].iloc[0] == 0.0
        # Every epoch's minibatch order hash equals the one recorded for the seed.
        assert list(table["order_hash"].iloc[1:]) == list(first["order_hash"].iloc[1:])
    # The recorded order is the seed's permutation, and it changes with the epoch.
    n = 192
    assert first["order_hash"].iloc[1] == order_hash(epoch_order(0, 1, n))
    assert order_hash(epoch_order(0, 1, n)) != order_hash(epoch_order(0, 2, n))


def test_identical_runs_give_identical_weights(tmp_path):
    # Two runs with the same optimizer under different names must see the same init, batches
    # and dropout-free updates: bitwise-identical weights prove the protocol.
    config = tiny_config(epochs=2, runs=[
        {"optimizer": "sgdm", "lr": 0.05, "name": "a"},
        {"optimizer": "sgdm", "lr": 0.05, "name": "b"},
    ])
    train_experiment(config, tmp_path)
    experiment = lossurf.load_experiment(tmp_path)
    assert same_state(experiment.weights("a"), experiment.weights("b"))


def test_switch_hands_over_at_the_boundary(trained):
    out, _ = trained
    table = lossurf.load_experiment(out).metrics("sgd-to-adam-50")
    assert list(table["optimizer"].iloc[1:]) == ["sgd", "sgd", "adam", "adam"]
    assert list(table["lr"].iloc[1:]) == [0.1, 0.1, 0.001, 0.001]
    # The first half is plain SGD: identical to the sgd run at epoch 2.
    sgd = lossurf.load_experiment(out).metrics("sgd")
    assert table["train_loss"].iloc[2] == sgd["train_loss"].iloc[2]
    run = tiny_config().runs[3]
    assert [phase_at(run, e, 200) for e in (100, 101)] == [0, 1]


def test_gradient_evaluations_count_both_protocols(tmp_path):
    config = tiny_config(epochs=1, runs=[
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "rk2-heun", "lr": 0.2},
        {"optimizer": "rk2-heun", "lr": 0.2, "options": {"minibatch": "next"}, "name": "heun-next"},
    ])
    train_experiment(config, tmp_path)
    experiment = lossurf.load_experiment(tmp_path)
    evaluations = {r: int(experiment.metrics(r)["gradient_evaluations"].iloc[-1]) for r in experiment.runs}
    batches = math.ceil(192 / 32)
    assert evaluations == {"sgd": batches, "rk2-heun": 2 * batches, "heun-next": batches}


def test_divergence_is_recorded_and_others_go_on(tmp_path):
    config = tiny_config(epochs=2, runs=[
        {"optimizer": "sgd", "lr": 1000, "name": "wild"},
        {"optimizer": "sgd", "lr": 1e-9},
    ], model={"name": "mlp", "options": {}, "init": {"scheme": "normal", "std": 1000}})
    statuses = train_experiment(config, tmp_path)
    assert statuses["wild"]["status"] == "diverged"
    assert statuses["wild"]["diverged_epoch"] == 1
    assert statuses["sgd"]["status"] == "finished"
    experiment = lossurf.load_experiment(tmp_path)
    with pytest.raises(LossurfError, match="diverged at epoch 1"):
        experiment.weights("wild", "final")


class Kill(Exception):
    pass


def test_killed_run_resumes_bitwise(trained, tmp_path):
    out, _ = trained
    config = tiny_config()

    def kill_after_adam_epoch_3(run, epoch, epochs, row):
        if run == "adam" and epoch == 3:
            raise Kill

    with pytest.raises(Kill):
        train_experiment(config, tmp_path, report=kill_after_adam_epoch_3)
    partial = lossurf.load_experiment(tmp_path)
    assert partial.status("sgd")["status"] == "finished"
    assert partial.status("adam")["status"] == "running"
    assert partial.status("rk2-heun")["status"] == "not started"
    calls = []
    train_experiment(config, tmp_path, report=lambda run, epoch, *_: calls.append((run, epoch)))
    # Finished runs are skipped, adam continues after epoch 3.
    assert ("sgd", 1) not in calls and ("adam", 4) in calls and ("adam", 1) not in calls
    reference = lossurf.load_experiment(out)
    for run in reference.runs:
        assert same_state(partial.weights(run), reference.weights(run)), run
    resumed, uninterrupted = partial.metrics("adam"), reference.metrics("adam")
    assert list(resumed["epoch"]) == list(uninterrupted["epoch"])
    assert list(resumed["train_loss"]) == list(uninterrupted["train_loss"])


def test_a_resumed_run_keeps_the_thread_count_it_began_with(tmp_path, monkeypatch):
    """Convolutions round differently with another thread count; a run resumed under another
    load (or LOSSURF_THREADS) must still end bitwise where it would have ended unresumed."""
    config = tiny_config(runs=[{"optimizer": "sgd", "lr": 0.1}])
    before = torch.get_num_threads()
    monkeypatch.setenv("LOSSURF_THREADS", "2")
    seen: list[int] = []
    train_experiment(config, tmp_path / "clean", report=lambda *_: seen.append(torch.get_num_threads()))
    assert set(seen) == {2}

    def kill_after_epoch_2(run, epoch, epochs, row):
        if epoch == 2:
            raise Kill

    with pytest.raises(Kill):
        train_experiment(config, tmp_path / "resumed", report=kill_after_epoch_2)
    monkeypatch.setenv("LOSSURF_THREADS", "1")  # another load: the policy would pick 1 now
    seen.clear()
    train_experiment(config, tmp_path / "resumed", report=lambda *_: seen.append(torch.get_num_threads()))
    assert set(seen) == {2}
    clean, resumed = (lossurf.load_experiment(tmp_path / d) for d in ("clean", "resumed"))
    assert same_state(resumed.weights("sgd"), clean.weights("sgd"))
    assert torch.get_num_threads() == before  # restored after training


def test_same_directory_different_experiment_is_refused(trained):
    out, _ = trained
    with pytest.raises(LossurfError, match=r"different experiment \(it differs in epochs \d+ -> 5\); "
                                           "pass another --out"):
        train_experiment(tiny_config(epochs=5), out)


def test_checkpoint_of_another_architecture(tmp_path):
    config = tiny_config(epochs=1, runs=[{"optimizer": "sgd", "lr": 0.1}])
    from lossurf.engine import prepare_experiment
    from lossurf.runs import ExperimentLayout, save_weights

    prepare_experiment(config, tmp_path)
    save_weights(ExperimentLayout(tmp_path).init(0), {"weight": torch.zeros(3, 3)})
    # Without its recorded hash (a directory from before init.json), the file is taken as found.
    ExperimentLayout(tmp_path).init_record(0).unlink()
    with pytest.raises(LossurfError, match="of another architecture"):
        train_experiment(config, tmp_path)


def test_kill_before_the_first_epoch_leaves_no_duplicate_rows(tmp_path):
    config = tiny_config(epochs=2, runs=[{"optimizer": "sgd", "lr": 0.1}])

    def kill_at_epoch_0(run, epoch, epochs, row):
        if epoch == 0:
            raise Kill

    with pytest.raises(Kill):
        train_experiment(config, tmp_path, report=kill_at_epoch_0)
    train_experiment(config, tmp_path)
    assert list(lossurf.load_experiment(tmp_path).metrics("sgd")["epoch"]) == [0, 1, 2]
