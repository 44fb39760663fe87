"""Issue 9's training details: epoch-0 metrics of batch-norm nets with data statistics, switch
epochs rounded one way everywhere and stated, CIFAR-10 augmentation as cifar.torch's script."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossurf import load_experiment
from lossurf.config import DataSpec, ExperimentConfig
from lossurf.data import load
from lossurf.data.base import seeded_subset
from lossurf.engine import train_experiment
from lossurf.runs import read_json
from lossurf.train import derive_seed, switch_epoch

from tests.test_data_cifar10 import _identify, _make_images, _write_bin


def _config(**over) -> ExperimentConfig:
    raw = {"name": "details", "data": {"name": "digits", "max_train": 200, "max_test": 100},
           "model": {"name": "mlp", "options": {"batch_norm": True, "hidden": [16]}},
           "seeds": [0], "epochs": 1, "batch_size": 50, "eval_subset": 100, "threads": 1,
           "runs": [{"optimizer": "sgd", "lr": 0.1}]}
    raw.update(over)
    return ExperimentConfig(**raw)


# ---- switch epochs --------------------------------------------------------------------------

def _reference(at: float, epochs: int) -> int:
    """Half up in exact arithmetic (the decimal the user typed), then one epoch of each method."""
    exact = Fraction(str(at)) * epochs + Fraction(1, 2)
    return min(max(math.floor(exact), 1), epochs - 1) if epochs > 1 else 1


@pytest.mark.parametrize("at,epochs,expected", [
    (0.25, 10, 3),   # "the first 25 % of 10 epochs": 2.5 rounds up (banker's gave 2)
    (0.75, 10, 8),   # 7.5 rounds up too (banker's gave 8: the two disagreed in direction)
    (0.5, 10, 5), (0.25, 200, 50), (0.5, 200, 100), (0.75, 200, 150),
    (0.29, 50, 15),  # 14.5 exactly, 14.499999999999998 in floating point
    (0.01, 10, 1), (0.99, 10, 9), (0.5, 1, 1), (0.5, 2, 1),
])
def test_switch_epoch(at: float, epochs: int, expected: int) -> None:
    assert switch_epoch(at, epochs) == expected == _reference(at, epochs)


def test_switch_epoch_matches_exact_rounding_everywhere() -> None:
    for epochs in (2, 3, 5, 10, 20, 50, 100, 200):
        for k in range(1, 100):
            assert switch_epoch(k / 100, epochs) == _reference(k / 100, epochs), (k, epochs)


def test_switched_run_states_its_switch_epoch(tmp_path: Path) -> None:
    # 62.5 % of 4 epochs = 2.5: half up gives 3 (banker's rounding would give 2)
    config = _config(epochs=4, model={"name": "mlp", "options": {"hidden": [16]}}, runs=[
        {"optimizer": "sgd", "lr": 0.1, "switch": {"to": "adam", "lr": 0.001, "at": 0.625}}])
    train_experiment(config, tmp_path / "exp")
    exp = load_experiment(tmp_path / "exp")
    (run,) = [name for name, _, _ in config.iter_runs()]
    info = read_json(exp.layout.run_info(run))
    assert info["switch_epoch"] == 3
    optimizers = list(exp.metrics(run)["optimizer"])
    assert optimizers == ["sgd", "sgd", "sgd", "sgd", "adam"]  # epochs 0..3 sgd, epoch 4 adam


# ---- epoch-0 metrics of batch-norm networks -----------------------------------------------

def test_epoch0_of_a_batchnorm_net_uses_data_statistics(tmp_path: Path) -> None:
    config = _config(model={"name": "mlp", "options": {"batch_norm": True, "hidden": [16]},
                            "init": {"scheme": "normal", "mean": -10.0, "std": 0.01}})
    train_experiment(config, tmp_path / "exp")
    exp = load_experiment(tmp_path / "exp")
    logged = float(exp.metrics("sgd")["train_loss"].iloc[0])

    # By hand: the init's weights, the same training subset the engine evaluates, the hidden
    # layer's pre-activations over it, their mean and unbiased variance as the BN statistics.
    init = exp.resolve(exp.init_label(0)).weights
    assert torch.equal(init["layers.bn1.running_mean"], torch.zeros(16))  # saved init untouched
    assert torch.equal(init["layers.bn1.running_var"], torch.ones(16))
    data = load(config.data)
    index = seeded_subset(len(data.train_x), config.eval_subset,
                          derive_seed("eval-subset", 0) % (2**31))
    x, y = data.train_x[index].flatten(1).double(), data.train_y[index]
    w = {k: v.double() for k, v in init.items()}

    def loss_with(mean: torch.Tensor, var: torch.Tensor) -> float:
        h = x @ w["layers.fc1.weight"].T  # no bias before batch norm
        h = (h - mean) / torch.sqrt(var + 1e-5) * w["layers.bn1.weight"] + w["layers.bn1.bias"]
        out = torch.relu(h) @ w["layers.out.weight"].T + w["layers.out.bias"]
        return float(F.cross_entropy(out, y))

    pre = x @ w["layers.fc1.weight"].T
    by_hand = loss_with(pre.mean(0), pre.var(0, unbiased=True))
    defaults = loss_with(torch.zeros(16, dtype=torch.float64), torch.ones(16, dtype=torch.float64))
    assert logged == pytest.approx(by_hand, rel=1e-4)
    assert logged < 10 < defaults  # sane, where the default statistics give an absurd loss


# ---- CIFAR-10 augmentation ------------------------------------------------------------------

def _augmented(tmp_path: Path, augment) -> tuple[torch.Tensor, list]:
    _write_bin(tmp_path, _make_images())
    data = load(DataSpec(name="cifar10", data_dir=tmp_path, augment=augment))
    torch.manual_seed(0)
    x = torch.randn(200, 3, 32, 32)
    out = data.augment(x, torch.Generator().manual_seed(7))
    return out, _identify(x, out, 4)


def test_flip_only_is_the_default_of_a_mapping(tmp_path: Path) -> None:
    assert DataSpec(name="cifar10", augment={}).augment.flip is True
    assert DataSpec(name="cifar10", augment={}).augment.crop is False
    out, matches = _augmented(tmp_path, {"flip": True, "crop": False})
    assert sorted(b for b, *_ in matches) == list(range(200))
    assert {(oy, ox) for _, oy, ox, _ in matches} == {(4, 4)}  # never cropped
    flips = sum(f for *_, f in matches)
    assert 60 < flips < 140


def test_crop_is_an_option_and_true_keeps_crop_and_flip(tmp_path: Path) -> None:
    _, crop_only = _augmented(tmp_path, {"flip": False, "crop": True})
    assert not any(f for *_, f in crop_only)
    assert len({(oy, ox) for _, oy, ox, _ in crop_only}) > 40
    both, _ = _augmented(tmp_path, {"flip": True, "crop": True})
    legacy, _ = _augmented(tmp_path, True)
    assert torch.equal(both, legacy)  # old `augment: true` configs train as they did
    assert load(DataSpec(name="cifar10", data_dir=tmp_path,
                         augment={"flip": False, "crop": False})).augment is None
