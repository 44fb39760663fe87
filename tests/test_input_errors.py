"""Bad input a user can fix: the experiment file, preset files and data directories. Each case
feeds the bad input to the real entry point and expects one line naming the problem and the
fix (exit code 2, no traceback)."""

from __future__ import annotations

import pytest

# run_cli is a fixture: `lossurf` in this process, returning a CompletedProcess-like result.
from tests.test_faults_train import assert_user_error, run_cli, write_config  # noqa: F401


def test_binary_experiment_file(tmp_path, run_cli):
    path = tmp_path / "b.yaml"
    path.write_bytes(b"\x00\xff\xfe")
    assert_user_error(run_cli("train", path, "--check"), "b.yaml", "not UTF-8 text",
                      "pass an experiment YAML file")


def test_nul_in_experiment_file(tmp_path, run_cli):
    path = tmp_path / "n.yaml"
    path.write_bytes(b"epochs: 1\x00\n")
    assert_user_error(run_cli("train", path, "--check"), "n.yaml", "#x0000",
                      "pass an experiment YAML file")


def test_binary_preset_file(tmp_path, run_cli):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\x00\xff\xfe")
    assert_user_error(run_cli("run", "optimizers", "--preset", path, "--out", tmp_path / "x"),
                      "preset", "p.yaml", "not UTF-8 text", "pass a preset YAML file")


@pytest.mark.parametrize("labels", [5, [b"cat"] * 20, [None] * 20, [2**70] * 20, [2.7] * 20])
def test_cifar_python_batch_with_bad_labels(tmp_path, run_cli, labels):
    """`train --check` on a python-format batch whose labels are not 20 integers 0..9."""
    import pickle

    import numpy as np

    from tests.test_data_cifar10 import _make_images, _write_py

    folder = tmp_path / "data" / "cifar-10-batches-py"
    _write_py(folder, _make_images())
    data = np.zeros((20, 3072), np.uint8)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    config = write_config(tmp_path / "cifar.yaml", data={"name": "cifar10"},
                          model={"name": "nin-small"})
    proc = run_cli("train", config, "--check", "--data-dir", tmp_path / "data")
    assert_user_error(proc, "data_batch_1: b'labels'", "integers 0..9, one per image",
                      "download and extract it again")
