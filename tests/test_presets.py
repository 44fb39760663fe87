"""Built-in presets validate; bad presets get errors that name the field and the fix."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from lossurf.errors import LossurfError
from lossurf.experiments.lr_search import grid_for
from lossurf.presets import load_preset, parse_preset, preset_names

from tests.test_recipes import TINY


def test_builtin_presets_load() -> None:
    assert preset_names() == ["cifar10", "cifar10-vgg", "digits", "ptb"]
    digits = load_preset("digits")
    assert digits.model.name == "cnn-small" and digits.surface.bn == "recompute"
    assert len(digits.seeds) >= 2 and digits.epochs <= 15
    cifar = load_preset("cifar10")
    assert (cifar.epochs, cifar.batch_size, cifar.surface.plane_steps) == (200, 128, 21)
    assert load_preset("ptb").batchnorm is None and load_preset("ptb").model.name == "lstm"


def test_user_copy_by_path(tmp_path) -> None:
    raw = copy.deepcopy(TINY)
    raw["epochs"] = 3
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_preset(path).epochs == 3


def test_unknown_preset_lists_names(tmp_path) -> None:
    with pytest.raises(LossurfError, match="unknown preset 'cifar'.*cifar10, cifar10-vgg, digits, ptb"):
        load_preset("cifar")


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.update(epochs=0), r"epochs: Input should be greater than or equal to 1"),
    (lambda r: r.update(seeds=[0]), r"seeds: List should have at least 2 items"),
    (lambda r: r["restarts"]["pairs"].append(["sgd", "lion"]),
     r"restarts.pairs names method 'lion'.*add it there"),
    (lambda r: r["methods"]["sgd"].update(lr=-1), r"methods.sgd.lr: Input should be greater"),
    (lambda r: r["surface"].update(bn="average"), r"surface.bn: Input should be 'recompute'"),
    (lambda r: r.update(colour="red"), r"colour: Extra inputs are not permitted"),
    (lambda r: r["switching"].update(fractions=[1.5]), r"strictly between 0 and 1"),
    (lambda r: r["optimizers"].update(bilinear_methods=["sgd"]),
     r"optimizers.bilinear_methods: List should have at least 4 items"),
])
def test_bad_fields_are_named(edit, message) -> None:
    raw = copy.deepcopy(TINY)
    edit(raw)
    with pytest.raises(LossurfError, match=message):
        parse_preset(raw, "mine.yaml")


def test_bad_yaml_names_the_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(LossurfError, match=r"not valid YAML at line \d+"):
        load_preset(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(LossurfError, match="must hold a mapping"):
        load_preset(path)


def test_lr_grids_follow_the_paper() -> None:
    digits = load_preset("digits")
    assert grid_for(digits, "sgd") == [0.2, 0.1, 0.05, 0.01]
    assert grid_for(digits, "adam") == [0.002, 0.001, 0.0005, 0.0001]
    assert grid_for(digits, "rk2-heun") == [0.4, 0.2, 0.1, 0.02]  # RK doubles
    assert grid_for(digits, "adam+rk2-heun") == [0.004, 0.002, 0.001, 0.0002]
    assert grid_for(digits, "adadelta") == [1.0, 0.5]  # the preset's own grid


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar10-vgg", "ptb"])
def test_runge_kutta_and_sgd_x2_rates_are_twice_their_base(name):
    """Sec. 3.4: "We doubled the learning rates ... with Runge-Kutta"; A.4: "SGD x2" is SGD at
    twice SGD's rate."""
    from lossurf.presets import load_preset

    methods = load_preset(name).methods
    base = {"sgd-2lr": "sgd", "rk2-heun": "sgd", "rk2-midpoint": "sgd", "rk2-ralston": "sgd",
            "adam+rk2-heun": "adam"}
    for method, of in base.items():
        if method in methods and of in methods:
            # declared, so that the preset check and --lr-search keep the factor
            assert methods[method].twice_of == of, (name, method)
            assert methods[method].lr == pytest.approx(2 * methods[of].lr), (name, method)


def test_doubled_rates_follow_their_base_under_lr_search():
    from lossurf.experiments.lr_search import searched, with_doubled

    preset = load_preset("digits")
    wanted = ["sgd-2lr", "rk2-heun", "adam+rk2-heun", "adadelta"]
    assert searched(preset, wanted) == ["sgd", "adam", "adadelta"]  # the bases, not the doubles
    chosen = {"sgd": 0.05, "adam": 0.0005, "adadelta": 1.0}
    assert with_doubled(preset, wanted, chosen) == {
        "sgd-2lr": 0.1, "rk2-heun": 0.1, "adam+rk2-heun": 0.001, "adadelta": 1.0}


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": 0.3}, "methods.rk2-heun: lr 0.3 is not twice sgd's 0.1 (twice_of: sgd); set it to 0.2"),
    ({"twice_of": "lion"}, "methods.rk2-heun.twice_of names method 'lion', which is not defined"),
    ({"twice_of": "sgd-2lr"}, "twice_of names 'sgd-2lr', which is itself twice another method's"),
])
def test_a_preset_whose_doubled_rate_is_not_twice_its_base_is_refused(change, message):
    import lossurf.presets

    raw = yaml.safe_load((Path(lossurf.presets.__file__).parent / "digits.yaml").read_text())
    raw["methods"]["rk2-heun"] = {**raw["methods"]["rk2-heun"], **change}
    with pytest.raises(LossurfError, match=re.escape(message)):
        parse_preset(raw)
