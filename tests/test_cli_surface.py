"""`lossurf surface ...` and `lossurf distance` on a trained experiment directory."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import xarray as xr

import lossurf
from _experiments import train_tiny_experiment
from lossurf.runs import ExperimentLayout


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    return train_tiny_experiment(tmp_path_factory.mktemp("exp"))




def test_line_end_points_reproduce_the_runs(experiment_dir, tmp_path, cli):
    store = tmp_path / "line.zarr"
    code, out, err = cli("surface", "line", experiment_dir, "--from", "init",
                             "--to", "adam", "--range", "0", "1", "--steps", "3", "--bn", "interpolate",
                             "--split", "test", "--out", store, "--no-progress")
    assert code == 0, err
    ds = xr.open_zarr(store)
    assert list(ds.alpha.values) == [0.0, 0.5, 1.0]
    assert ds.attrs["anchor_labels"] == ["init", "adam"]
    # alpha = 0 and 1 are the end-point models themselves (eval mode, stored BN statistics).
    experiment = lossurf.load_experiment(experiment_dir)
    data = experiment.dataset()
    for alpha, weights in ((0.0, experiment.weights("adam", "init")), (1.0, experiment.weights("adam"))):
        model = experiment.model()
        model.load_state_dict(weights)
        model.eval()
        with torch.no_grad():
            expected = torch.nn.functional.cross_entropy(model(data.test_x), data.test_y).item()
        assert float(ds.loss.sel(alpha=alpha)) == pytest.approx(expected, rel=1e-5)


def test_basin_plane_and_distance(experiment_dir, tmp_path, cli):
    code, out, err = cli("surface", "basin", experiment_dir, "--run", "sgd",
                             "--steps", "5", "--subset", "32", "--out", tmp_path / "b.zarr", "--no-progress")
    assert code == 0, err
    assert "lambda" in xr.open_zarr(tmp_path / "b.zarr").dims
    code, out, err = cli("surface", "plane", experiment_dir, "--points",
                             "init,sgd,adam:epoch=1", "--steps", "3", "--subset", "32",
                             "--out", tmp_path / "p.zarr", "--no-progress")
    assert code == 0, err
    plane = xr.open_zarr(tmp_path / "p.zarr")
    assert plane.loss.shape == (3, 3) and np.isfinite(plane.loss.values).all()
    code, out, err = cli("distance", experiment_dir, "sgd", "adam")
    assert code == 0, err
    fdist = float(re.search(r"functional distance\s+([0-9.]+)", out)[1])
    disagreement = float(re.search(r"label disagreement\s+([0-9.]+)", out)[1])
    assert 0 < fdist < np.sqrt(2) and 0 <= disagreement <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["surface", "line", "{exp}", "--from", "init", "--to", "lion"], "unknown end point 'lion'"),
        (["surface", "line", "{exp}", "--from", "init", "--to", "sgd@seed0"],
         r"unknown end point 'sgd@seed0' \(this experiment has one seed, 0: its end points carry "
         r"no @seed\); use one of \['init', 'sgd'"),
        (["surface", "plane", "{exp}", "--points", "init,sgd,sgd"], "the same weights"),
        (["surface", "plane", "{exp}", "--points", "init,,adam"],
         "--points 'init,,adam' has an empty name; separate the end points with single commas"),
        (["surface", "line", "{exp}", "--from", "init", "--to", "adam", "--steps", "1"], "at least two steps"),
        (["surface", "line", "{exp}", "--from", "init", "--to", "adam:epoch=7"], "no checkpoint for epoch 7"),
        (["surface", "plane", "{exp}", "--points", "init,sgd"], "3 points|three"),
        (["surface", "line", "{tmp}", "--from", "init", "--to", "adam"], "not an experiment directory"),
        (["surface", "line", "{exp}", "--from", "init", "--to", "adam", "--bn", "magic"], "magic"),
        (["surface", "line", "{exp}", "--from", "init", "--to", "corrupt"], "corrupted"),
    ],
)
def test_bad_input_exits_2(experiment_dir, tmp_path, args, message, cli):
    if "corrupt" in args:
        # A truncated checkpoint: a copy of the experiment whose adam weights are cut short.
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(experiment_dir, copy)
        final = ExperimentLayout(copy).checkpoint("adam", None)
        final.write_bytes(final.read_bytes()[:100])
        args = [a.replace("corrupt", "adam") for a in args]
        experiment = copy
    else:
        experiment = experiment_dir
    args = [a.format(exp=experiment, tmp=tmp_path) for a in args]
    code, _, err = cli(*args, "--no-progress")
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_end_points_of_different_architectures(experiment_dir, tmp_path, cli):
    import shutil

    from lossurf.runs import save_weights

    copy = tmp_path / "copy"
    shutil.copytree(experiment_dir, copy)
    save_weights(ExperimentLayout(copy).checkpoint("adam", None), {"fc.weight": torch.zeros(2, 2)})
    code, _, err = cli("surface", "line", copy, "--from", "init", "--to", "adam",
                           "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert re.search("architecture|differ|missing", err), err
