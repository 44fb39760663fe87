"""`lossurf train` and the user errors it reports: one message, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


TINY = {
    "data": {"name": "digits", "max_train": 64, "max_test": 32},
    "model": {"name": "mlp"},
    "epochs": 1,
    "batch_size": 32,
    "runs": [{"optimizer": "sgd", "lr": 0.1}],
}




def write(path: Path, raw) -> Path:
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_train_writes_an_experiment(tmp_path, cli):
    config = write(tmp_path / "e.yaml", TINY)
    code, out, err = cli("train", str(config), "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 0, err
    assert "sgd" in out and "finished" in out
    assert (tmp_path / "o" / "runs" / "sgd" / "final.safetensors").is_file()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("model: [unclosed", "not valid YAML at line 1"),
        ({**TINY, "model": {"name": "resnet9000"}}, "unknown model 'resnet9000'.*cnn-small"),
        ({**TINY, "runs": [{"optimizer": "lion", "lr": 0.1}]}, "unknown optimizer 'lion'.*adam"),
        ({**TINY, "epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({**TINY, "runs": [{"optimizer": "sgd", "lr": 0.1, "momentun": 0.9}]}, "runs.0.momentun"),
        ({**TINY, "data": {"name": "cifar10", "data_dir": "/nonexistent/cifar"}}, "cifar-10-batches"),
        ({**TINY, "data": {"name": "ptb"}}, "ptb.train.txt"),
    ],
)
def test_user_errors_exit_2_with_one_message(tmp_path, raw, message, cli):
    config = write(tmp_path / "e.yaml", raw)
    code, _, err = cli("train", str(config), "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 2
    assert err.startswith("error: ")
    assert "Traceback" not in err
    import re

    assert re.search(message, err, re.S), err
    # Nothing was half-written for a config that failed validation.
    assert not (tmp_path / "o" / "runs").exists()


def test_missing_experiment_file(tmp_path, cli):
    code, _, err = cli("train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert code == 2 and "does not exist" in err
