"""Every bound an experiment config enforces fails with a one-line message naming the field."""

from __future__ import annotations

import math

import pytest

from lossurf.config import MAX_EPOCHS, MAX_LR, MAX_NAME_LENGTH, MAX_SEED, parse_config
from lossurf.errors import LossurfError

BASE = {"model": {"name": "mlp"}, "epochs": 1, "runs": [{"optimizer": "sgd", "lr": 0.1}]}


def run(**fields):
    return {"runs": [{"optimizer": "sgd", "lr": 0.1, **fields}]}


@pytest.mark.parametrize(
    ("update", "field", "why"),
    [
        ({"epochs": 1_000_000_000}, "epochs", f"less than or equal to {MAX_EPOCHS}"),
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        (run(lr=1e300), "runs.0.lr", "less than or equal to 1000"),
        (run(lr=math.inf), "runs.0.lr", "finite number"),
        (run(lr=math.nan), "runs.0.lr", "finite number"),
        (run(lr=-0.1), "runs.0.lr", "greater than 0"),
        (run(lr=10**400), "runs.0.lr", "valid number"),
        (run(switch={"to": "adam", "lr": 1e9, "at": 0.5}), "runs.0.switch.lr", "less than or equal"),
        (run(switch={"to": "adam", "lr": 0.1, "at": math.nan}), "runs.0.switch.at", "finite"),
        ({"seeds": [2**70]}, "seeds.0", f"less than or equal to {MAX_SEED}"),
        ({"seeds": [-1]}, "seeds.0", "greater than or equal to 0"),
        ({"seeds": list(range(1001))}, "seeds", "at most 1000"),
        ({"data": {"split_seed": 2**64}}, "data.split_seed", "less than or equal"),
        ({"batch_size": 10**12}, "batch_size", "less than or equal to 1000000"),
        ({"eval_subset": 2**40}, "eval_subset", "less than or equal"),
        ({"data": {"max_train": 2**40}}, "data.max_train", "less than or equal"),
        ({"checkpoint_every": 10**9}, "checkpoint_every", "less than or equal"),
        ({"threads": 10**6}, "threads", "less than or equal to 1024"),
        (run(name="a\x00b"), "runs.0.name", "control character"),
        (run(name="tab\there"), "runs.0.name", "control character"),
        (run(name="x" * 300), "runs.0.name", f"300 characters long; use at most {MAX_NAME_LENGTH}"),
        (run(name="."), "runs.0.name", "not '.' or '..'"),
        (run(name=".."), "runs.0.name", "not '.' or '..'"),
        (run(name="a/b"), "runs.0.name", "none of"),
        (run(name="a\\b"), "runs.0.name", "none of"),
        (run(name="a@b"), "runs.0.name", "none of"),
        (run(name=""), "runs.0.name", "non-empty"),
        ({"name": "x" * 300}, "name", "characters long"),
        ({"name": "a\x00"}, "name", "control character"),
        ({"model": {"name": "mlp", "init": {"scheme": "normal", "mean": math.inf}}}, "model.init.mean", "finite"),
        ({"model": {"name": "mlp", "init": {"scheme": "normal", "std": math.nan}}}, "model.init.std", "finite"),
        ({"model": {"name": "mlp", "init": {"scheme": "normal", "std": 1e300}}}, "model.init.std", "less than"),
        ({"data": {"data_dir": "/tmp/a\x00b"}}, "data.data_dir", "NUL character"),
        ({"device": "bogus"}, "device", "unknown device 'bogus'; use cpu, cuda, cuda:N or mps"),
        ({"device": "cpu:0"}, "device", "unknown device"),
        ({"device": 3}, "device", "unknown device 3"),
    ],
)
def test_out_of_bounds_field_is_named(update, field, why):
    with pytest.raises(LossurfError) as caught:
        parse_config({**BASE, **update}, "e.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid experiment config in e.yaml: ")
    assert f" {field}: " in message, message
    assert why in message, message


@pytest.mark.parametrize(
    "update",
    [
        {"epochs": MAX_EPOCHS},
        run(lr=MAX_LR),
        {"seeds": [0, MAX_SEED]},
        run(name="x" * MAX_NAME_LENGTH),
        run(name="adam-2.5"),
        {"device": " CUDA:1 "},
    ],
)
def test_values_at_the_bounds_are_accepted(update):
    config = parse_config({**BASE, **update})
    assert config.device in ("cpu", "cuda:1")


def test_every_problem_is_listed_on_one_line():
    with pytest.raises(LossurfError) as caught:
        parse_config({**BASE, "epochs": -1, "batch_size": 0, "runs": [{"optimizer": "sgd"}]}, "e.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.count(";") >= 2
    for field in ("epochs:", "batch_size:", "runs.0.lr: Field required"):
        assert field in message
