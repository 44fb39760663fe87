"""`lossurf hessian` in a subprocess on a tiny trained digits experiment."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import lossurf
from lossurf import hessian
from _experiments import train_tiny_experiment


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    return train_tiny_experiment(tmp_path_factory.mktemp("exp"))


def _lossurf(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossurf.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_hessian_table_for_several_end_points(experiment_dir, tmp_path, cli):
    code, _, err = cli("surface", "basin", experiment_dir, "--run", "sgd", "--steps", "5",
                       "--subset", "32", "--no-progress")
    assert code == 0, err
    done = _lossurf("hessian", experiment_dir, "sgd", "adam:epoch=1", "--top", "2", "--trace",
                    "--density", "--subset", "64", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("end point"))
    for column in ("top eigenvalue", "trace", "eps-sharpness(0.001) %", "basin width"):
        assert column in header
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[-2:]}
    assert set(rows) == {"sgd", "adam:epoch=1"}
    assert rows["adam:epoch=1"].rstrip().endswith("-")  # no basin surface for it
    # the printed top eigenvalue is the stored one, which matches an independent in-memory run
    store = tmp_path / "hessian-sgd-train-n64.zarr"
    ds = xr.open_zarr(store, group="topk", consolidated=False)
    assert f"{float(ds.eigenvalues[0]):.6g}" in rows["sgd"]
    experiment = lossurf.load_experiment(experiment_dir)
    again = hessian.top_eigenpairs(experiment.model(), experiment.weights("sgd"),
                                           experiment.dataset(), k=2, subset=64)
    np.testing.assert_allclose(again.eigenvalues.values, ds.eigenvalues.values, rtol=1e-9)
    attrs = hessian.load(store).attrs
    assert attrs["anchor_labels"] == ["sgd"] and len(attrs["anchor_file_sha256"][0]) == 64
    assert attrs["data"].startswith("digits/train n=64") and attrs["dtype"] == "float32"
    # a second run reuses the stored parts and prints the same table
    second = _lossurf("hessian", experiment_dir, "sgd", "adam:epoch=1", "--top", "2", "--trace",
                      "--density", "--subset", "64", "--out", tmp_path)
    assert second.returncode == 0 and second.stdout == done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["lion"], "unknown end point 'lion'"),
    (["adam:epoch=7"], "no checkpoint for epoch 7"),
    (["adam", "--top", "0", "--sharpness", "0"], "nothing to compute"),
    (["adam", "--top", "100000"],
     r"--top must be at most the number of parameters \(\d+\), got 100000"),
    (["adam", "--top", "-1"], r"--top must be a whole number of eigenpairs, at least 1 \(0 for "
                              r"none\); got -1$"),
    (["adam", "--top", "300"], r"--top 300 asks for more eigenpairs than the 200 Lanczos steps"),
    (["adam", "--tol", "0"], r"--tol must be a number between 0 and 1 \(e\.g\. 1e-4\), got 0\.0$"),
    (["adam", "--tol", "nan"], r"--tol must be a number between 0 and 1 .*got nan$"),
    (["adam", "--sharpness", "-1"], r"--sharpness must be a positive eps \(e\.g\. 1e-3; 0 for "
                                    r"none\), got -1\.0$"),
    (["adam", "--sharpness", "inf"], r"--sharpness must be a positive eps .*got inf$"),
])
def test_bad_hessian_requests_exit_2_with_one_line(experiment_dir, tmp_path, cli, args, message):
    code, _, err = cli("hessian", experiment_dir, *args, "--out", tmp_path / "h.zarr")
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err.strip()), err
    assert not (tmp_path / "h.zarr").exists()  # checked before anything is made
