"""A user's own model and data set named by import path ("mypkg.models:tiny") in an experiment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from torch import nn

import lossurf
from lossurf import data, models
from lossurf.config import DataSpec, ModelSpec, parse_config
from lossurf.data.base import Dataset, seeded_subset
from lossurf.engine import resolve_config
from lossurf.errors import LossurfError

PKG = "lossurf_testpkg"  # unique: the test imports it into this process's sys.modules

_MODELS = '''
import torch
from torch import nn


def tiny(num_classes: int, in_features: int, hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


class Net(nn.Module):
    def __init__(self, num_classes: int = 2, scale: float = 1.0):
        super().__init__()
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.fc(x)


def catch_all(**kwargs):
    """Takes any option, receives no data option."""
    return nn.Linear(6, 2 if "num_classes" not in kwargs else 99)


def broken(width: int = 3):
    raise RuntimeError("width 3 is not supported")


def not_a_module():
    return [nn.Linear(2, 2)]


NOT_CALLABLE = 42
'''

_DATA = '''
import numpy as np
import torch
from lossurf.data.base import Dataset


def load(n: int = 120, features: int = 6):
    """Random data from the global RNG (lossurf seeds it with split_seed)."""
    x = torch.randn(n, features)
    y = (x @ torch.randn(features, 3)).argmax(1)
    k = n * 3 // 4
    return {"train_x": x[:k], "train_y": y[:k], "test_x": x[k:], "test_y": y[k:],
            "num_classes": 3}


def as_tuple(split_seed: int):
    rng = np.random.default_rng(split_seed)
    x = rng.normal(size=(40, 1, 4, 4))  # float64 -> float32
    y = rng.integers(0, 2, size=40).astype(np.int32)  # int32 -> int64
    return x[:30], y[:30], x[30:], y[30:]


def as_dataset():
    x = torch.arange(24.0).reshape(12, 2)
    y = torch.arange(12) % 2
    return Dataset("mine", "classification", x[:8], y[:8], x[8:], y[8:], num_classes=2)


def tokens(shape_mismatch: bool = False):
    x = torch.arange(40).reshape(8, 5) % 7
    y = (x + 1) % 7
    return {"train_x": x[:6], "train_y": y[:6, :4] if shape_mismatch else y[:6],
            "test_x": x[6:], "test_y": y[6:], "task": "language_model"}


def bad(kind: str):
    x, y = torch.randn(10, 3), torch.zeros(10, dtype=torch.long)
    good = {"train_x": x, "train_y": y, "test_x": x, "test_y": y}
    if kind == "string":
        return "not data"
    if kind == "missing":
        return {"train_x": x, "train_y": y}
    if kind == "extra":
        return {**good, "labels": y}
    if kind == "lengths":
        return {**good, "train_y": y[:4]}
    if kind == "float_targets":
        return {**good, "test_y": y.float()}
    if kind == "int_inputs":
        return {**good, "train_x": x.long()}
    if kind == "shapes":
        return {**good, "test_x": torch.randn(10, 4)}
    if kind == "nan":
        return {**good, "train_x": x.masked_fill(x > 1, float("nan"))}
    if kind == "task":
        return {**good, "task": "regression"}
    if kind == "labels":
        return {**good, "num_classes": 1, "train_y": torch.ones(10, dtype=torch.long)}
    if kind == "raises":
        raise KeyError("no such split")
    if kind == "list":
        return {**good, "train_x": x.tolist()}
    raise AssertionError(kind)
'''


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    """Write the package, put its parent on sys.path for this module, then forget it."""
    root = tmp_path_factory.mktemp("userpkg")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text("")
    (root / PKG / "models.py").write_text(_MODELS)
    (root / PKG / "data.py").write_text(_DATA)
    (root / PKG / "fails_on_import.py").write_text("raise RuntimeError('config missing')\n")
    (root / PKG / "needs_dependency.py").write_text("import lossurf_not_installed_dep\n")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        del sys.modules[name]


# --- models -----------------------------------------------------------------------------------


def test_user_model_is_seeded_like_a_registered_one_and_leaves_the_global_rng(pkg):
    spec = ModelSpec(name=f"{PKG}.models:tiny", options={"num_classes": 3, "in_features": 6})
    state = torch.random.get_rng_state()
    a, b = models.build(spec, seed=5), models.build(spec, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    # independent reference: the factory called by hand under the same seed
    from lossurf_testpkg.models import tiny

    torch.manual_seed(5)
    ref = tiny(num_classes=3, in_features=6)
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in a.state_dict().items())
    assert not torch.equal(models.build(spec, seed=6)[1].weight, a[1].weight)


def test_user_model_gets_the_init_scheme(pkg):
    spec = ModelSpec(name=f"{PKG}.models:Net", init={"scheme": "normal", "mean": -10, "std": 0.01})
    net = models.build(spec, seed=0)
    values = torch.cat([p.reshape(-1) for p in net.parameters()])
    assert values.mean().item() == pytest.approx(-10, abs=0.01) and values.std().item() < 0.02


def test_data_options_reach_only_parameters_the_factory_names(pkg):
    data_options = {"num_classes": 3, "in_features": 6, "in_channels": 1}
    assert models.resolve_options(f"{PKG}.models:tiny", data_options, {"hidden": 4}) == {
        "hidden": 4, "num_classes": 3, "in_features": 6}
    assert models.resolve_options(f"{PKG}.models:Net", data_options) == {"num_classes": 3}
    assert models.resolve_options(f"{PKG}.models:catch_all", data_options, {"w": 1}) == {"w": 1}
    assert models.build({"name": f"{PKG}.models:catch_all", "options": {"w": 1}}).out_features == 2


def test_resolved_config_rebuilds_the_user_model(pkg):
    config = parse_config({
        "data": {"name": f"{PKG}.data:load"}, "model": {"name": f"{PKG}.models:tiny"},
        "epochs": 1, "runs": [{"optimizer": "sgd", "lr": 0.1}],
    })
    resolved = resolve_config(config, data.load(config.data))
    assert resolved.model.options == {"num_classes": 3, "in_features": 6}
    again = parse_config(yaml.safe_load(yaml.safe_dump(resolved.model_dump(mode="json"))))
    net = models.build(again.model, seed=0)
    assert net(torch.zeros(2, 6)).shape == (2, 3)


@pytest.mark.parametrize("name, message", [
    ("lossurf_no_such_pkg.models:tiny",
     r"cannot import module 'lossurf_no_such_pkg.models' .*No module named 'lossurf_no_such_pkg'"
     r".*is it on PYTHONPATH / installed\?"),
    (f"{PKG}.fails_on_import:make",
     r"cannot import module .*fails_on_import.*RuntimeError: config missing"),
    (f"{PKG}.needs_dependency:make",
     r"while importing it: ModuleNotFoundError: .*lossurf_not_installed_dep.*PYTHONPATH"),
    (f"{PKG}.models:resnet20", r"module 'lossurf_testpkg.models' has no attribute 'resnet20'"),
    (f"{PKG}.models:NOT_CALLABLE", r"is an object of type int, not a callable"),
    (f"{PKG}.models:broken", r"model factory .*:broken' raised RuntimeError: width 3 is not "
                             r"supported; fix the factory"),
    (f"{PKG}.models:not_a_module", r"returned a list, not a torch.nn.Module"),
    (f"{PKG}.models:", r"not an import path of the form 'package.module:callable'"),
])
def test_model_factory_errors_are_one_line(pkg, name, message):
    with pytest.raises(LossurfError, match=message) as info:
        models.build({"name": name})
    assert "\n" not in str(info.value)


def test_user_model_options_are_checked_against_its_signature(pkg):
    with pytest.raises(LossurfError, match=r"has no option 'depth'; valid options: .*hidden"):
        models.build({"name": f"{PKG}.models:tiny", "options": {"depth": 3}})
    with pytest.raises(LossurfError, match=r"option 'hidden' must be int, got str"):
        models.build({"name": f"{PKG}.models:tiny",
                      "options": {"hidden": "8", "num_classes": 2, "in_features": 6}})


# --- data -------------------------------------------------------------------------------------


def test_data_factory_mapping_is_seeded_by_split_seed_and_subset_like_builtins(pkg):
    state = torch.random.get_rng_state()
    full = data.load(DataSpec(name=f"{PKG}.data:load", split_seed=3))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(3)  # the independent reference: the factory under the seed, by hand
    from lossurf_testpkg.data import load

    ref = load()
    assert torch.equal(full.train_x, ref["train_x"]) and torch.equal(full.test_y, ref["test_y"])
    assert full.task == "classification" and full.num_classes == 3 and full.model_options() == {
        "num_classes": 3, "in_features": 6}
    small = data.load(DataSpec(name=f"{PKG}.data:load", split_seed=3, max_train=20, max_test=7,
                               options={"n": 120}))
    keep = seeded_subset(90, 20, 3)
    assert torch.equal(small.train_x, full.train_x[keep]) and len(small.test_x) == 7
    assert not torch.equal(data.load(DataSpec(name=f"{PKG}.data:load")).train_x, full.train_x)


def test_data_factory_tuple_of_numpy_arrays_and_dataset(pkg):
    got = data.load(DataSpec(name=f"{PKG}.data:as_tuple", split_seed=1))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 1, 4, 4))
    assert got.train_x.dtype == torch.float32 and got.train_y.dtype == torch.int64
    assert torch.equal(got.test_x, torch.from_numpy(x[30:]).float())
    assert got.num_classes == 2 and got.model_options()["in_channels"] == 1
    ds = data.load(DataSpec(name=f"{PKG}.data:as_dataset"))
    assert isinstance(ds, Dataset) and ds.name == "mine" and len(ds.train_x) == 8


def test_data_factory_language_model(pkg):
    got = data.load(DataSpec(name=f"{PKG}.data:tokens"))
    assert got.task == "language_model" and got.num_classes == 7  # inferred: max token + 1
    assert got.model_options() == {"vocab_size": 7}
    with pytest.raises(LossurfError, match=r"a language model needs int64 token ids train_x and "
                                           r"train_y of one shape \[N, T\]"):
        data.load(DataSpec(name=f"{PKG}.data:tokens", options={"shape_mismatch": True}))


@pytest.mark.parametrize("kind, message", [
    ("string", r"returned a str; return a lossurf Dataset, a mapping"),
    ("missing", r"missing keys \['test_x', 'test_y'\]"),
    ("extra", r"unknown keys \['labels'\]"),
    ("lengths", r"train_x has shape \(10, 3\) and train_y \(4,\)"),
    ("float_targets", r"test_y has dtype torch.float32; targets must be integer class ids"),
    ("int_inputs", r"train_x has dtype torch.int64; classification inputs must be floating"),
    ("shapes", r"train_x examples have shape \(3,\), test_x examples \(4,\)"),
    ("nan", r"train_x contains NaN or Inf"),
    ("task", r"task 'regression' is not one of \['classification', 'language_model'\]"),
    ("labels", r"train_y holds ids outside \[0, 1\)"),
    ("raises", r"data factory .*:bad' raised KeyError: 'no such split'; fix the factory"),
    ("list", r"train_x is a list; return a torch tensor or numpy array"),
])
def test_data_factory_output_is_checked(pkg, kind, message):
    with pytest.raises(LossurfError, match=message) as info:
        data.load(DataSpec(name=f"{PKG}.data:bad", options={"kind": kind}))
    assert "\n" not in str(info.value)


def test_data_factory_import_and_augment_errors(pkg):
    with pytest.raises(LossurfError, match=r"cannot import module 'nopkg_x' .*PYTHONPATH"):
        data.load(DataSpec(name="nopkg_x:load"))
    with pytest.raises(LossurfError, match=r"gives no augmentation; set augment: false"):
        data.load(DataSpec(name=f"{PKG}.data:load", augment=True))


# --- the real CLI, in subprocesses ------------------------------------------------------------


def _lossurf(args: list, cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), OMP_NUM_THREADS="1")
    code = "import sys; from lossurf.cli import main; sys.argv = ['lossurf'] + sys.argv[1:]; main()"
    script = Path(sys.executable).parent / "lossurf"
    command = [str(script)] if script.is_file() else [sys.executable, "-c", code]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_trains_and_analyses_a_user_model_and_data_set(pkg, tmp_path):
    experiment = {
        "name": "mine",
        "data": {"name": f"{PKG}.data:load", "options": {"n": 160}, "max_test": 32},
        "model": {"name": f"{PKG}.models:tiny", "options": {"hidden": 6}},
        "epochs": 2, "batch_size": 40, "eval_subset": 64,
        "runs": [{"optimizer": "sgd", "lr": 0.2}, {"optimizer": "adam", "lr": 0.01}],
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(experiment))
    out = tmp_path / "runs"
    done = _lossurf(["train", "exp.yaml", "--out", out, "--no-progress"], tmp_path, pkg)
    assert done.returncode == 0, done.stderr
    store = tmp_path / "line.zarr"
    done = _lossurf(["surface", "line", out, "--from", "sgd", "--to", "adam", "--range", "0", "1", "--steps", "3",
                     "--out", store, "--no-progress"], tmp_path, pkg)
    assert done.returncode == 0, done.stderr
    done = _lossurf(["distance", out, "sgd", "adam"], tmp_path, pkg)
    assert done.returncode == 0, done.stderr
    assert "fdist" in done.stdout or "functional" in done.stdout.lower()
    # the stored, resolved config rebuilds the model; alpha = 1 is adam's own training loss
    exp = lossurf.load_experiment(out)
    assert exp.config.model.options == {"hidden": 6, "num_classes": 3, "in_features": 6}
    net = exp.model()
    net.load_state_dict(exp.weights("adam"))
    ds_data = exp.dataset()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(net(ds_data.train_x), ds_data.train_y).item()
    assert float(xr.open_zarr(store).loss.sel(alpha=1.0)) == pytest.approx(expected, rel=1e-5)


def test_cli_bad_import_paths_exit_2_with_the_message(pkg, tmp_path):
    base = {"epochs": 1, "runs": [{"optimizer": "sgd", "lr": 0.1}]}
    cases = [
        ({"model": {"name": "mypkg_missing.models:resnet20"}},
         "cannot import module 'mypkg_missing.models'"),
        ({"model": {"name": f"{PKG}.models:tiny"}, "data": {"name": f"{PKG}.data:nothing"}},
         "has no attribute 'nothing'"),
    ]
    for i, (fields, message) in enumerate(cases):
        (tmp_path / f"bad{i}.yaml").write_text(yaml.safe_dump({**base, **fields}))
        done = _lossurf(["train", f"bad{i}.yaml", "--out", tmp_path / f"out{i}"], tmp_path, pkg)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
        assert not (tmp_path / f"out{i}" / "experiment.yaml").exists()
