"""Surface stores vouch for every array, not only the values: a damaged coordinate is named and
repaired by the same command; a regular file where a store is expected is called a file."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import zarr

from lossurf.errors import LossurfError
from lossurf.surface.checksums import CHECKSUM_FILE
from lossurf.surface.store import compute_surface, lock_path, open_surface
from test_store import NaiveEvaluator, setup  # noqa: F401  (setup is a fixture)
from test_store_faults import _assert_bitwise, _garbage, _plane, experiment_dir  # noqa: F401


def _alter(path, name, scale=32768.0):
    """Overwrite an array of the store with other, perfectly readable values."""
    array = zarr.open_group(str(path), mode="r+", use_consolidated=True)[name]
    array[...] = np.asarray(array[...]) * scale + 1


@pytest.mark.parametrize("damage", ["altered", "garbage"])
@pytest.mark.parametrize("dim", ["alpha", "beta"])
def test_damaged_coordinate_is_named_and_the_same_command_repairs_it(setup, tmp_path, damage,
                                                                      dim):
    clean, _ = _plane(setup, tmp_path / "clean.zarr")
    path = tmp_path / "s.zarr"
    _plane(setup, path)
    if damage == "altered":
        _alter(path, dim)
    else:
        _garbage(path / dim / "c" / "0")
    with pytest.raises(LossurfError) as info:
        open_surface(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"surface store {path} is damaged: its coordinate array '{dim}'")
    assert message.endswith("run the same surface command again to repair it")
    ds, ev = _plane(setup, path)  # the same request again: nothing to recompute but the axis
    assert ev.points == 0
    _assert_bitwise(ds, clean)
    _assert_bitwise(open_surface(path), open_surface(tmp_path / "clean.zarr"))


def test_store_without_coordinate_checksums_stays_readable_and_gains_them(setup, tmp_path):
    clean, _ = _plane(setup, tmp_path / "clean.zarr")
    path = tmp_path / "s.zarr"
    _plane(setup, path)
    record = path / CHECKSUM_FILE
    payload = json.loads(record.read_text())
    assert set(payload["coordinates"]) == {"alpha", "beta"}
    del payload["coordinates"]  # as written before coordinates had checksums
    record.write_text(json.dumps(payload))
    _assert_bitwise(open_surface(path), open_surface(tmp_path / "clean.zarr"))

    _alter(path, "alpha")  # not detectable yet: no record
    assert open_surface(path).alpha.values[-1] > 2
    ds, ev = _plane(setup, path)  # a resume restores the axis and records its checksum
    assert ev.points == 0
    _assert_bitwise(ds, clean)
    assert set(json.loads(record.read_text())["coordinates"]) == {"alpha", "beta"}
    _alter(path, "beta")
    with pytest.raises(LossurfError, match="coordinate array 'beta'"):
        open_surface(path)


def test_cli_damaged_coordinate_plot_refuses_then_rerun_repairs(experiment_dir, tmp_path, cli):
    store, figure = tmp_path / "s.zarr", tmp_path / "z.png"
    args = ("surface", "line", experiment_dir, "--from", "init", "--to", "adam", "--steps", "5",
            "--subset", "16", "--out", store, "--no-progress")
    code, _, err = cli(*args)
    assert code == 0, err
    axis = open_surface(store).alpha.values
    _alter(store, "alpha")
    code, _, err = cli("plot", store, "--out", figure)
    assert code == 2 and not figure.exists()
    assert re.fullmatch(rf"error: surface store {re.escape(str(store))} is damaged: its coordinate "
                        r"array 'alpha' [^\n]*; run the same surface command again to repair it\n",
                        err), err
    code, _, err = cli(*args)
    assert code == 0, err
    code, _, err = cli("plot", store, "--out", figure)
    assert code == 0, err
    assert figure.is_file()
    np.testing.assert_array_equal(open_surface(store).alpha.values, axis)


def test_a_regular_file_is_not_called_a_damaged_store(setup, tmp_path):
    model, anchors, x, y = setup
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    with pytest.raises(LossurfError) as info:
        _plane(setup, afile)
    message = str(info.value)
    assert message == (f"{afile} is a file, not a surface store (a zarr directory); pass "
                       "another --out")
    assert afile.read_text() == "mine\n" and not lock_path(afile).exists()
    with pytest.raises(LossurfError) as info:
        open_surface(afile)
    assert str(info.value) == (f"{afile} is a file, not a surface store (a zarr directory); "
                               "pass the path of a surface store")


def test_cli_a_regular_file_as_out_or_store(experiment_dir, tmp_path, cli):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    code, _, err = cli("surface", "line", experiment_dir, "--from", "init", "--to", "adam",
                       "--steps", "3", "--subset", "16", "--out", afile, "--no-progress")
    assert code == 2 and afile.read_text() == "mine\n"
    assert err == f"error: {afile} is a file, not a surface store (a zarr directory); pass " \
                  "another --out\n"
    config = tmp_path / "some.yaml"
    config.write_text("epochs: 1\n")
    code, _, err = cli("plot", config)
    assert code == 2
    assert err == f"error: {config} is a file, not a surface store (a zarr directory); pass " \
                  "the path of a surface store\n"
