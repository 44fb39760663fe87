"""Devices are checked before anything is written: an unknown or absent device is one line and
exit 2, and no experiment.yaml saves it (which would refuse the directory afterwards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lossurf.devices import check_device, device_name
from lossurf.errors import LossurfError

TINY = {
    "data": {"name": "digits", "max_train": 64, "max_test": 32},
    "model": {"name": "mlp"},
    "epochs": 1,
    "batch_size": 32,
    "eval_subset": 32,
    "runs": [{"optimizer": "sgd", "lr": 0.1}],
}

NO_CUDA = not torch.cuda.is_available()


def lossurf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from lossurf.cli import main; main()", *args],
        capture_output=True, text=True, timeout=300,
    )


def test_names_are_checked_for_spelling():
    assert device_name(" CUDA:3 ") == "cuda:3"
    assert device_name("mps") == "mps"
    for bad in ("bogus", "gpu", "cuda:", "cuda:x", "cpu:0", "", None, 1):
        with pytest.raises(LossurfError, match=r"unknown device .*; use cpu, cuda, cuda:N or mps"):
            device_name(bad)


def test_cpu_is_always_available():
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_says_why_and_what_to_use(name):
    why = "built without CUDA" if torch.version.cuda is None else "no GPU found"
    with pytest.raises(LossurfError, match=rf"device '{name}' is not available here \(.*{why}\); use --device cpu"):
        check_device(name)


@pytest.mark.skipif(NO_CUDA, reason="needs a GPU")
def test_a_gpu_index_beyond_the_count_is_named():
    count = torch.cuda.device_count()
    assert check_device("cuda:0").type == "cuda"
    with pytest.raises(LossurfError, match=rf"'cuda:{count}' is not available here \({count} GPU"):
        check_device(f"cuda:{count}")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize(
    ("where", "device", "message"),
    [
        ("flag", "cuda", "device 'cuda' is not available here"),
        ("flag", "bogus", "unknown device 'bogus'; use cpu, cuda, cuda:N or mps"),
        ("file", "cuda:1", "device 'cuda:1' is not available here"),
        ("file", "bogus", "device: unknown device 'bogus'"),
    ],
)
def test_train_refuses_a_device_before_writing(tmp_path, where, device, message, cli):
    raw = {**TINY, "device": device} if where == "file" else TINY
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump(raw))
    extra = ["--device", device] if where == "flag" else []
    code, _, err = cli("train", str(config), "--out", str(tmp_path / "o"), "--no-progress", *extra)
    assert code == 2, err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "experiment.yaml").exists()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_the_real_command_refuses_cuda_here(tmp_path):
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump(TINY))
    done = lossurf("train", str(config), "--out", str(tmp_path / "o"), "--device", "cuda")
    assert done.returncode == 2
    assert done.stderr.startswith("error: device 'cuda' is not available here")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o" / "experiment.yaml").exists()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_surface_and_distance_refuse_a_device_before_writing(tmp_path, cli):
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump(TINY))
    exp = tmp_path / "o"
    code, _, err = cli("train", str(config), "--out", str(exp), "--no-progress", "--device", "cuda")
    assert code == 2 and "is not available here" in err
    # Nothing was left that would refuse the directory: it trains on the CPU next.
    code, _, err = cli("train", str(config), "--out", str(exp), "--no-progress")
    assert code == 0, err
    for device, message in (("cuda", "is not available here"), ("bogus", "unknown device 'bogus'")):
        code, _, err = cli("surface", "line", str(exp), "--from", "init", "--to", "sgd",
                           "--steps", "3", "--no-progress", "--device", device)
        assert code == 2 and message in err, err
        code, _, err = cli("distance", str(exp), "init", "sgd", "--device", device)
        assert code == 2 and message in err, err
        for command in (
            ("hessian", str(exp), "sgd", "--top", "1"),
            ("curve", str(exp), "init", "sgd", "--epochs", "1", "--no-progress"),
            ("align", str(exp), "init", "sgd", "--steps", "3", "--no-progress"),
            ("surface", "random", str(exp), "--at", "sgd", "--steps", "3", "--no-progress"),
        ):
            code, _, err = cli(*command, "--device", device)
            assert code == 2 and message in err, (command, err)
    for made in ("surfaces", "hessian", "curves"):
        assert not (exp / made).exists() or not any((exp / made).iterdir()), made


def test_check_validates_and_writes_nothing(tmp_path):
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump(TINY))
    done = lossurf("train", str(config), "--check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("experiment: ok; 1 run x 1 epoch of mlp")
    assert "device cpu" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml"]


def test_train_without_out_or_check_names_both(tmp_path, cli):
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump(TINY))
    code, _, err = cli("train", str(config))
    assert code == 2 and "--out DIR" in err and "--check" in err
