"""Surface stores that never lie: damaged chunks are recomputed, creation is atomic, one writer
at a time, a broken store is one line of error, and nothing warns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from lossurf.errors import LossurfError
from lossurf.locks import exclusive_lock
from lossurf.params import as_state
from lossurf.surface.checksums import CHECKSUM_FILE
from lossurf.surface.paths import line_grid
from lossurf.surface.plane import barycentric_grid
from lossurf.surface.store import compute_surface, lock_path, open_surface
from test_store import NaiveEvaluator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    anchors = []
    for seed in range(3):
        torch.manual_seed(seed + 1)
        anchors.append(as_state(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    return model, anchors, x, y


def _plane(setup, path, **kw):
    """A 5x5 barycentric plane with a reference, 2 rows (10 points) per chunk."""
    model, anchors, x, y = setup
    evaluator = NaiveEvaluator(model, x, y)
    ds = compute_surface(evaluator, anchors, barycentric_grid(steps=5), store=path,
                         reference=anchors[0], chunk_points=10, progress=False, **kw)
    return ds, evaluator


def _assert_bitwise(a: xr.Dataset, b: xr.Dataset) -> None:
    xr.testing.assert_identical(a, b)
    for name in a.data_vars:
        assert a[name].values.tobytes() == b[name].values.tobytes(), name


def _garbage(file: Path) -> None:
    file.write_bytes(os.urandom(64))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: max(1, file.stat().st_size // 2)])


@pytest.mark.parametrize("damage", [Path.unlink, _garbage, _truncate],
                         ids=["deleted", "garbage", "truncated"])
@pytest.mark.parametrize("var", ["loss", "fdist"])
def test_damaged_chunk_is_recomputed_exactly_and_bitwise(setup, tmp_path, capsys, damage, var):
    clean, _ = _plane(setup, tmp_path / "clean.zarr")
    path = tmp_path / "s.zarr"
    _plane(setup, path)
    chunk = path / var / "c" / "1" / "0"  # rows 2-3: points 10..19
    assert chunk.is_file()
    damage(chunk)
    capsys.readouterr()

    reader = open_surface(path)  # the reader already tells the truth
    assert not reader.computed.values[2:4].any() and reader.computed.values[[0, 1, 4]].all()
    assert np.isnan(reader[var].values[2:4]).all()

    ds, again = _plane(setup, path)
    assert again.points == 10  # exactly the damaged chunk
    err = capsys.readouterr().err
    assert "recomputing 10 points whose stored values were missing or damaged" in err
    _assert_bitwise(ds, clean)
    _assert_bitwise(open_surface(path), open_surface(tmp_path / "clean.zarr"))
    _, third = _plane(setup, path)
    assert third.points == 0 and "recomputing" not in capsys.readouterr().err


def test_damaged_mask_or_checksums(setup, tmp_path, capsys):
    clean, _ = _plane(setup, tmp_path / "clean.zarr")
    path = tmp_path / "s.zarr"
    _plane(setup, path)
    _garbage(path / "computed" / "c" / "0" / "0")  # the mask lies; the values verify
    ds, ev = _plane(setup, path)
    assert ev.points == 0 and "recomputing" not in capsys.readouterr().err
    _assert_bitwise(ds, clean)
    assert open_surface(path).computed.values.all()

    (path / CHECKSUM_FILE).write_text("{not json")  # nothing can be verified any more
    ds, ev = _plane(setup, path)
    assert ev.points == 25
    assert "recomputing 25 points" in capsys.readouterr().err
    _assert_bitwise(ds, clean)


def test_damaged_coordinate_is_restored(setup, tmp_path):
    clean, _ = _plane(setup, tmp_path / "clean.zarr")
    path = tmp_path / "s.zarr"
    _plane(setup, path)
    _garbage(path / "beta" / "c" / "0")
    with pytest.raises(LossurfError, match=r"^surface store .*s\.zarr is damaged: its coordinate "
                       r"array 'beta' .*run the same surface command again to repair it$"):
        open_surface(path)
    ds, ev = _plane(setup, path)
    assert ev.points == 0
    _assert_bitwise(ds, clean)


@pytest.mark.parametrize("content", [b"{garbage", b"", b"\xff\xfe\x00binary"])
def test_unreadable_metadata_is_one_line(setup, tmp_path, content):
    # (the arrays' own zarr.json files are never read: the root's consolidated copy is)
    path = tmp_path / "s.zarr"
    _plane(setup, path)
    (path / "zarr.json").write_bytes(content)
    for call in (lambda: _plane(setup, path), lambda: open_surface(path)):
        with pytest.raises(LossurfError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and f"surface store {path} is damaged" in message
        assert "delete it and run the same command again" in message


def test_open_surface_errors(tmp_path):
    with pytest.raises(LossurfError, match=r"surface store .*nowhere\.zarr does not exist"):
        open_surface(tmp_path / "nowhere.zarr")
    (tmp_path / "junk").mkdir()
    with pytest.raises(LossurfError, match=r"junk is not a readable surface store"):
        open_surface(tmp_path / "junk")


def test_no_warnings_anywhere(setup, tmp_path):
    """Writing, resuming, reading (ours and plain xarray, either way) never warns."""
    path = tmp_path / "s.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _plane(setup, path)
        _plane(setup, path)
        open_surface(path)
        xr.open_zarr(path).load()
        xr.open_zarr(path, consolidated=False).load()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.lock", "s.zarr"]


def _child(script: str, *args, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, **kw)


_WRITER = """
    import os, sys, time
    from pathlib import Path
    import torch
    from torch import nn
    from lossurf.params import as_state
    from lossurf.surface.paths import line_grid
    from lossurf.surface import store as store_module
    from test_store import NaiveEvaluator

    path, mode, signal = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    anchors = []
    for seed in range(3):
        torch.manual_seed(seed + 1)
        anchors.append(as_state(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))

    class Waiting(NaiveEvaluator):
        def evaluate(self, *a, **k):
            signal.touch()  # holding the lock now
            while not signal.with_suffix(".go").exists():
                time.sleep(0.05)
            return super().evaluate(*a, **k)

    if mode == "kill-before-rename":
        os.rename = lambda *a: os._exit(137)  # dies with the finished temporary store
    if mode == "kill-mid-creation":
        store_module.Checksums.write = lambda *a: os._exit(137)
    evaluator = (Waiting if mode == "wait" else NaiveEvaluator)(model, x, y)
    store_module.compute_surface(evaluator, anchors[:2], line_grid(steps=9), store=path,
                                 chunk_points=3, progress=False)
    print("done")
"""


@pytest.mark.parametrize("mode", ["kill-before-rename", "kill-mid-creation"])
def test_killed_during_creation_leaves_nothing_at_the_path(setup, tmp_path, mode):
    model, anchors, x, y = setup
    path = tmp_path / "line.zarr"
    child = _child(_WRITER, path, mode, tmp_path / "signal")
    _, err = child.communicate(timeout=120)
    assert child.returncode == 137, err
    assert not path.exists()
    assert [p.name for p in tmp_path.glob(".line.zarr.creating-*")]  # the kill's leftover
    ds = compute_surface(NaiveEvaluator(model, x, y), anchors[:2], line_grid(steps=9),
                         store=path, chunk_points=3, progress=False)
    assert not list(tmp_path.glob(".line.zarr.creating-*"))
    clean = compute_surface(NaiveEvaluator(model, x, y), anchors[:2], line_grid(steps=9),
                            chunk_points=3, progress=False)
    _assert_bitwise(ds, clean)


def test_full_disk_during_creation_is_one_line_and_leaves_nothing(setup, tmp_path, monkeypatch):
    import errno

    model, anchors, x, y = setup

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", full)
    path = tmp_path / "s.zarr"
    with pytest.raises(LossurfError, match=r"cannot write surface store .*s\.zarr \(No space left "
                                           r"on device\); free some space"):
        compute_surface(NaiveEvaluator(model, x, y), anchors[:2], line_grid(steps=3), store=path,
                        progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.lock"]


def test_a_half_made_store_at_the_path_is_refused(setup, tmp_path):
    model, anchors, x, y = setup
    path = tmp_path / "s.zarr"
    path.mkdir()
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(LossurfError, match=r"s\.zarr exists but is not a lossurf surface store "
                                           r"\(KeyError\); pass a new --out or delete it"):
        compute_surface(NaiveEvaluator(model, x, y), anchors[:2], line_grid(steps=3), store=path,
                        progress=False)


def _wait_for(file: Path, child: subprocess.Popen) -> None:
    for _ in range(1200):
        if file.exists() or child.poll() is not None:
            break
        time.sleep(0.1)
    assert file.exists(), child.communicate()[1]


def test_two_writers_second_refused_with_holder_pid(tmp_path):
    path, signal = tmp_path / "line.zarr", tmp_path / "signal"
    first = _child(_WRITER, path, "wait", signal)
    try:
        _wait_for(signal, first)
        second = _child(_WRITER, path, "plain", tmp_path / "other")
        _, err = second.communicate(timeout=120)
        assert second.returncode != 0
        assert f"surface store {path} is in use by pid {first.pid}" in err
    finally:
        signal.with_suffix(".go").touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "done" in out, err
    assert bool(open_surface(path).computed.all())


# -- through the CLI --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    from lossurf.config import parse_config
    from lossurf.engine import train_experiment

    out = tmp_path_factory.mktemp("exp")
    config = parse_config({
        "data": {"name": "digits", "max_train": 64, "max_test": 32},
        "model": {"name": "mlp"},
        "epochs": 1, "batch_size": 32, "eval_subset": 32, "checkpoint_every": 1,
        "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.003}],
    })
    train_experiment(config, out)
    return out


def _plane_args(experiment_dir, store):
    return ("surface", "plane", experiment_dir, "--points", "init,sgd,adam", "--steps", "3",
            "--subset", "16", "--out", store, "--no-progress")


def test_cli_corrupt_metadata_exits_2(experiment_dir, tmp_path, cli):
    store = tmp_path / "p.zarr"
    code, _, err = cli(*_plane_args(experiment_dir, store))
    assert code == 0, err
    (store / "zarr.json").write_bytes(os.urandom(40))
    code, out, err = cli(*_plane_args(experiment_dir, store))
    assert code == 2 and "Traceback" not in err
    assert re.fullmatch(r"error: surface store \S+p\.zarr is damaged: its zarr\.json cannot be "
                        r"read \(\w+\); delete it and run the same command again to recompute "
                        r"it\n", err), err


def test_cli_damaged_chunk_recomputed(experiment_dir, tmp_path, cli):
    store = tmp_path / "p.zarr"
    code, _, err = cli(*_plane_args(experiment_dir, store))
    assert code == 0, err
    before = open_surface(store)
    _garbage(store / "loss" / "c" / "0" / "0")  # 3x3 points in one chunk
    code, out, err = cli(*_plane_args(experiment_dir, store))
    assert code == 0, err
    assert "recomputing 9 points whose stored values were missing or damaged" in err
    _assert_bitwise(open_surface(store), before)


def test_cli_second_writer_exits_2_naming_the_holder(experiment_dir, tmp_path):
    store = tmp_path / "p.zarr"
    with exclusive_lock(lock_path(store), f"surface store {store}"):
        child = _child("from lossurf.cli import main; import sys; sys.argv[0] = 'lossurf'; main()",
                       *_plane_args(experiment_dir, store))
        _, err = child.communicate(timeout=300)
    assert child.returncode == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert f"surface store {store} is in use by pid {os.getpid()}" in err
    assert not store.exists()
