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


def test_duplicate_key_in_experiment_file(tmp_path, run_cli):
    """A repeated key was accepted, the last value winning; it names the key and both lines."""
    path = write_config(tmp_path / "f.yaml")
    path.write_text(path.read_text() + "epochs: 5\n")
    first = 1 + path.read_text().splitlines().index("epochs: 3")
    last = len(path.read_text().splitlines())
    assert_user_error(run_cli("train", path, "--check"),
                      f"experiment file {path}: key 'epochs' appears twice (lines {first} and "
                      f"{last}); keep one")


def test_duplicate_key_nested_and_thrice(tmp_path, run_cli):
    path = tmp_path / "f.yaml"
    path.write_text("model: {name: mlp}\nepochs: 1\nruns:\n  - optimizer: sgd\n    lr: 0.1\n"
                    "    lr: 0.2\n    lr: 0.3\n")
    assert_user_error(run_cli("train", path, "--check"),
                      "key 'runs.0.lr' appears 3 times (lines 5, 6 and 7); keep one")


def test_merge_keys_may_be_overridden(tmp_path, run_cli):
    """`<<: *base` then a key of base is YAML's override, not a repeat."""
    path = tmp_path / "f.yaml"
    path.write_text("model: {name: mlp}\nepochs: 1\ndata: {name: digits, max_train: 32, "
                    "max_test: 16}\nbatch_size: 16\nruns:\n  - &b {optimizer: sgd, lr: 0.1}\n"
                    "  - {<<: *b, lr: 0.2, name: fast}\n")
    proc = run_cli("train", path, "--check")
    assert proc.returncode == 0, proc.stderr


def test_duplicate_key_in_preset_file(tmp_path, run_cli):
    from importlib import resources

    text = resources.files("lossurf.presets").joinpath("digits.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(text + "epochs: 7\n")
    assert_user_error(run_cli("run", "optimizers", "--preset", path, "--out", tmp_path / "x"),
                      f"preset {path}: key 'epochs' appears twice", "keep one")


def test_quoted_and_plain_spellings_of_a_key_are_one_key(tmp_path, run_cli):
    path = tmp_path / "f.yaml"
    path.write_text('model: {name: mlp}\nepochs: 1\n"epochs": 2\nruns: [{optimizer: sgd, lr: 1}]\n')
    assert_user_error(run_cli("train", path, "--check"), "key 'epochs' appears twice (lines 2 and 3)")


def test_experiment_path_is_a_directory(tmp_path, run_cli):
    folder = tmp_path / "somedir"
    folder.mkdir()
    assert_user_error(run_cli("train", folder, "--check"),
                      f"experiment file {folder} is a directory", "pass the path of a YAML file")
    assert_user_error(run_cli("train", tmp_path / "nowhere.yaml", "--check"),
                      "nowhere.yaml does not exist")


def test_preset_path_is_a_directory(tmp_path, run_cli):
    folder = tmp_path / "somedir"
    folder.mkdir()
    assert_user_error(run_cli("run", "optimizers", "--preset", folder, "--out", tmp_path / "x"),
                      f"preset {folder} is a directory", "preset YAML file")


def test_data_dir_that_is_a_file(tmp_path, run_cli):
    afile = tmp_path / "afile"
    afile.write_text("")
    config = write_config(tmp_path / "c.yaml", data={"name": "cifar10"},
                          model={"name": "nin-small"})
    assert_user_error(run_cli("train", config, "--check", "--data-dir", afile),
                      f"{afile}: it is a file, not a directory")


def _config_error(raw) -> str:
    from lossurf.config import parse_config
    from lossurf.errors import LossurfError

    with pytest.raises(LossurfError) as caught:
        parse_config(raw, "e.yaml")
    assert "\n" not in str(caught.value)
    return str(caught.value)


BASE = {"model": {"name": "mlp"}, "epochs": 1, "runs": [{"optimizer": "sgd", "lr": 0.1}]}


def test_unknown_fields_list_the_valid_ones():
    """`Extra inputs are not permitted` alone left the user guessing what was allowed."""
    message = _config_error({**BASE, "epoch": 3})
    assert "epoch: Extra inputs are not permitted (did you mean 'epochs'?); valid fields here:" \
        in message, message
    assert "batch_size, checkpoint_every" in message and "runs, seeds" in message
    message = _config_error({**BASE, "model": {"name": "mlp", "option": {}}})
    assert "model.option: Extra inputs are not permitted (did you mean 'options'?); valid " \
           "fields here: init, name, options" in message, message
    message = _config_error({**BASE, "runs": [{"optimizer": "sgd", "lr": 0.1,
                                              "switch": {"to": "adam", "lr": 1, "at": 0.5,
                                                         "when": 1}}]})
    assert "runs.0.switch.when: Extra inputs are not permitted; valid fields here: at, lr, " \
           "options, to" in message, message


def test_union_member_names_are_not_part_of_the_location():
    """`data.augment.AugmentSpec.x` named pydantic's union member, not a field of the file."""
    message = _config_error({**BASE, "data": {"augment": {"flop": True}}})
    assert "data.augment.flop: Extra inputs are not permitted (did you mean 'flip'?); valid " \
           "fields here: crop, flip" in message, message
    assert "AugmentSpec" not in message and "augment.bool" not in message, message


def test_a_run_that_is_not_a_mapping_shows_what_a_run_looks_like():
    message = _config_error({**BASE, "runs": [{"optimizer": "sgd", "lr": 0.1}, 3]})
    assert "runs.1: got 3, not a mapping; a run looks like {optimizer: sgd, lr: 0.1}" \
        in message, message
    message = _config_error({**BASE, "runs": [{"optimizer": "sgd", "lr": 0.1, "switch": "adam"}]})
    assert "runs.0.switch: got 'adam', not a mapping; a switch looks like {to: sgd, lr: 0.1, " \
           "at: 0.5}" in message, message
    message = _config_error({**BASE, "model": "mlp"})
    assert "model: got 'mlp', not a mapping; a model looks like {name: mlp" in message, message


def test_cli_shows_the_valid_fields(tmp_path, run_cli):
    path = write_config(tmp_path / "e.yaml", bogus_key=1)
    assert_user_error(run_cli("train", path, "--check"),
                      "bogus_key: Extra inputs are not permitted; valid fields here: batch_size")


def test_preset_errors_list_the_valid_fields():
    import copy

    from lossurf.errors import LossurfError
    from lossurf.presets import parse_preset
    from tests.test_recipes import TINY as PRESET

    raw = copy.deepcopy(PRESET)
    raw["methods"]["sgd"] = 3
    raw["optimizers"]["pairz"] = []
    with pytest.raises(LossurfError) as caught:
        parse_preset(raw, "p.yaml")
    message = str(caught.value)
    assert "methods.sgd: got 3, not a mapping; a method looks like {optimizer: sgd, lr: 0.1}" \
        in message, message
    assert "optimizers.pairz: Extra inputs are not permitted (did you mean 'pairs'?); valid " \
           "fields here: bilinear_methods, methods, pairs" in message, message



def test_experiment_file_given_as_preset(tmp_path, run_cli):
    path = write_config(tmp_path / "d.yaml")
    assert_user_error(
        run_cli("run", "optimizers", "--preset", path, "--out", tmp_path / "x"),
        f"{path} is an experiment file, not a preset; train it with `lossurf train {path} "
        f"--out DIR`, or pass a preset (cifar10, cifar10-vgg, digits, ptb, or a preset YAML)")


def test_preset_given_as_experiment_file(tmp_path, run_cli):
    from importlib import resources

    path = tmp_path / "p.yaml"
    path.write_bytes(resources.files("lossurf.presets").joinpath("digits.yaml").read_bytes())
    assert_user_error(
        run_cli("train", path, "--check"),
        f"{path} is a preset, not an experiment file; run its recipes with `lossurf run RECIPE "
        f"--preset {path} --out DIR`, or pass an experiment YAML file (runs:, model:, epochs:)")


@pytest.mark.parametrize("value, problem", [
    ("9" * 5000, "Exceeds the limit (4300 digits)"),
    ("2020-13-45", "month must be in 1..12"),
])
def test_yaml_value_python_cannot_build(tmp_path, run_cli, value, problem):
    """An integer past Python's 4300-digit limit or an impossible date raised ValueError from
    inside the YAML loader."""
    path = tmp_path / "e.yaml"
    path.write_text(f"model: {{name: mlp}}\nepochs: 1\nruns: [{{optimizer: sgd, lr: 0.1}}]\n"
                    f"name: {value}\n")
    assert_user_error(run_cli("train", path, "--check"), "e.yaml is not valid YAML at line 4",
                      problem, "fix the value")
