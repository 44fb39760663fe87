"""`lossurf surface random | pca | hessian` on a tiny trained digits experiment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import lossurf
from lossurf import surface
from lossurf.config import parse_config
from _experiments import train_tiny_experiment
from lossurf.engine import train_experiment
from lossurf.params import flatten, moving_keys


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    return train_tiny_experiment(tmp_path_factory.mktemp("exp"), epochs=3)


def test_random_plane_center_is_the_end_point_and_a_rerun_resumes(experiment_dir, tmp_path, cli):
    store = tmp_path / "random.zarr"
    args = ("surface", "random", experiment_dir, "--at", "adam:epoch=2", "--steps", "3",
            "--span", "0.5", "--seed", "4", "--bn", "interpolate", "--subset", "32",
            "--out", store, "--no-progress")
    code, out, err = cli(*args)
    assert code == 0, err
    assert "written to" in out
    ds = xr.open_zarr(store).load()
    assert ds.attrs["anchor_labels"] == ["adam:epoch=2"]
    assert ds.attrs["anchor_checkpoints"] == ["epoch=2"]
    assert ds.attrs["direction_seed"] == 4
    experiment = lossurf.load_experiment(experiment_dir)
    weights = experiment.weights("adam", 2)
    same = surface.random_plane(experiment.model(), weights, experiment.dataset(), steps=3,
                                span=0.5, seed=4, bn="interpolate", subset=32, progress=False)
    np.testing.assert_array_equal(ds.loss.values, same.loss.values)
    # a store whose second half was never written (a killed run) is completed by the same command
    group = zarr.open_group(str(store), mode="r+")
    group["computed"][1:] = False
    group["loss"][1:] = np.nan
    code, out, err = cli(*args)
    assert code == 0, err
    np.testing.assert_array_equal(xr.open_zarr(store).loss.values, same.loss.values)


def test_random_line_and_bad_options(experiment_dir, tmp_path, cli):
    code, out, err = cli("surface", "random", experiment_dir, "--at", "sgd", "--dims", "1",
                         "--steps", "3", "--subset", "16", "--out", tmp_path / "l.zarr",
                         "--no-progress")
    assert code == 0, err
    assert xr.open_zarr(tmp_path / "l.zarr").loss.dims == ("alpha",)
    code, out, err = cli("surface", "random", experiment_dir, "--at", "sgd", "--dims", "3")
    assert code == 2 and err.strip() == "error: --dims must be 1 or 2, got 3"
    code, out, err = cli("surface", "random", experiment_dir, "--at", "sgd", "--normalization",
                         "unit", "--out", tmp_path / "u.zarr")
    assert code == 2 and "unknown normalization 'unit'" in err and err.count("\n") == 1
    code, out, err = cli("surface", "random", experiment_dir, "--at", "nope")
    assert code == 2 and "unknown end point 'nope'" in err


def test_pca_plane_of_a_run(experiment_dir, tmp_path, cli):
    store = tmp_path / "pca.zarr"
    code, out, err = cli("surface", "pca", experiment_dir, "--run", "sgd", "--steps", "3",
                         "--subset", "16", "--out", store, "--no-progress")
    assert code == 0, err
    assert "pca explained variance ratio" in out
    ds = xr.open_zarr(store)
    assert ds.attrs["pca_epochs"] == [0, 1, 2, 3]
    experiment = lossurf.load_experiment(experiment_dir)
    model = experiment.model()
    keys = moving_keys(model)
    final = flatten(experiment.weights("sgd"), keys)
    m = torch.stack([flatten(experiment.weights("sgd", e), keys) - final for e in ("init", 1, 2)])
    s = np.linalg.svd(m.numpy(), compute_uv=False)
    np.testing.assert_allclose(ds.attrs["pca_explained_variance_ratio"], s[:2] ** 2 / (s ** 2).sum(),
                               rtol=1e-8)
    assert ds.attrs["trajectory_run"] == "sgd"


def test_pca_needs_checkpoints(tmp_path, cli):
    config = parse_config({
        "data": {"name": "digits", "max_train": 64, "max_test": 32}, "model": {"name": "mlp"},
        "epochs": 2, "batch_size": 32, "eval_subset": 32, "checkpoint_every": 2,
        "runs": [{"optimizer": "sgd", "lr": 0.1}],
    })
    train_experiment(config, tmp_path / "exp")
    code, out, err = cli("surface", "pca", tmp_path / "exp", "--run", "sgd", "--no-progress")
    assert code == 2 and "got 2; train with checkpoint_every: 1" in err and err.count("\n") == 1


def test_pca_with_a_checkpoint_every_epoch_asks_for_more_epochs(experiment_dir, cli):
    code, out, err = cli("surface", "pca", experiment_dir, "--run", "sgd:epoch=1", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "got 2; train with more epochs or pick a later epoch of the run" in err


def test_hessian_plane(experiment_dir, tmp_path, cli):
    store = tmp_path / "h.zarr"
    code, out, err = cli("surface", "hessian", experiment_dir, "--at", "adam", "--steps", "3",
                         "--span", "0.05", "--hessian-subset", "32", "--subset", "16",
                         "--out", store, "--no-progress")
    assert code == 0, err
    ds = xr.open_zarr(store)
    values = ds.attrs["hessian_eigenvalues"]
    assert values[0] >= values[1]
    directions = surface.load_directions(store)
    experiment = lossurf.load_experiment(experiment_dir)
    keys = moving_keys(experiment.model())
    d1, d2 = (flatten(directions[n], keys) for n in ("d1", "d2"))
    length = ds.attrs["direction_norm"]
    assert float(d1.norm()) == pytest.approx(length, rel=1e-9)
    assert float(d1 @ d2) == pytest.approx(0.0, abs=1e-6 * length ** 2)
    # d1 is an eigenvector: H d1 = lambda1 d1 (on the same examples)
    from lossurf.hessian import HessianOperator
    from lossurf.surface.evaluate import EvalData

    data = EvalData.from_dataset(experiment.dataset(), split="train", subset=32, seed=0)
    op = HessianOperator(experiment.model(), experiment.weights("adam"), data)
    unit = d1 / length
    hv = op.hvp(unit.to(op.theta.dtype)).cpu().double()
    assert float((hv - values[0] * unit).norm()) <= 1e-2 * abs(values[0])


def test_hessian_plane_refuses_a_hessian_subset_below_one(experiment_dir, tmp_path, cli):
    code, _, err = cli("surface", "hessian", experiment_dir, "--at", "adam", "--hessian-subset",
                       "0", "--out", tmp_path / "h.zarr", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "hessian_subset (--hessian-subset) must be at least 1 example, got 0" in err
    assert not (tmp_path / "h.zarr").exists()
