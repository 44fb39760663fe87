"""`lossurf plot STORE.zarr [--out FILE]`: every kind of store the API writes, to PNG, PDF and
HTML, and one-line errors for what cannot be drawn."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lossurf import surface
from lossurf.plots import plot_store
from lossurf.surface.checksums import CHECKSUM_FILE
from lossurf.surface.evaluate import EvalData
from lossurf.surface.store import open_surface

ROOT = Path(__file__).resolve().parents[1]
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """One store of every kind the API writes (a line with distances too), tiny and exact."""
    root = tmp_path_factory.mktemp("stores")
    torch.manual_seed(0)
    model = _net()
    points = []
    for seed in range(4):
        torch.manual_seed(seed + 10)
        points.append(_net().state_dict())
    x = torch.randn(48, 5)
    data = EvalData(x=x, y=(x[:, 0] > 0).long() + (x[:, 1] > 1).long(), task="classification")
    kw = {"progress": False, "bn": "interpolate"}
    surface.line(model, points[0], points[1], data, steps=7, store=root / "line.zarr", **kw)
    surface.distance_along(model, points[0], points[0], points[1], data, steps=6,
                           store=root / "distance.zarr", **kw)
    surface.basin(model, points[1], points[0], data, steps=6, store=root / "basin.zarr", **kw)
    for kind, count in (("barycentric", 3), ("bilinear", 4), ("affine", 3)):
        surface.plane(model, points[:count], data, kind=kind, steps=4,
                      store=root / f"{kind}.zarr", **kw)
    return {p.stem: p for p in root.glob("*.zarr")}


def _check(path: Path, fmt: str, ds=None) -> None:
    data = path.read_bytes()
    if fmt == "html":
        page = data.decode()
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        assert len(data) > 1_000_000  # plotly.js is inlined: the page opens offline
        assert "Plotly.newPlot" in page and not re.search(r"<script[^>]+src=", page)
        if ds is not None and ds.loss.ndim == 1:  # the drawn numbers are the store's
            assert json.dumps(float(ds.loss.values[3])) in page
    else:
        assert data.startswith(MAGIC[fmt]) and len(data) > 5_000


def _lossurf(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "lossurf.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(("kind", "fmt"), [
    ("line", "html"), ("distance", "pdf"), ("basin", "png"), ("barycentric", "png"),
    ("bilinear", "html"), ("affine", "pdf"),
])
def test_every_kind_through_the_cli(stores, tmp_path, kind, fmt):
    out = tmp_path / f"figure.{fmt}"
    done = _lossurf("plot", stores[kind], "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"figure: {out}" and done.stderr == ""
    _check(out, fmt, open_surface(stores[kind]))


@pytest.mark.parametrize("kind", ["line", "distance", "basin", "barycentric", "bilinear",
                                  "affine"])
def test_every_kind_and_format_in_python(stores, tmp_path, kind):
    ds = open_surface(stores[kind])
    for fmt in ("png", "pdf", "html"):
        assert plot_store(stores[kind], tmp_path / f"f.{fmt}") == tmp_path / f"f.{fmt}"
        _check(tmp_path / f"f.{fmt}", fmt, ds)


def test_default_output_is_a_png_beside_the_store(stores, tmp_path, cli):
    import shutil

    store = tmp_path / "mine.zarr"
    shutil.copytree(stores["line"], store)
    code, out, err = cli("plot", store)
    assert code == 0, err
    assert out.strip() == f"figure: {tmp_path / 'mine.png'}"
    _check(tmp_path / "mine.png", "png")


def test_hand_written_store_without_mask_or_attrs(tmp_path, cli):
    """A store written by hand with xarray (no computed mask, no lossurf attrs) draws too."""
    import xarray as xr

    xs = np.linspace(0, 1, 9)
    xr.Dataset({"loss": (("alpha",), 1 + xs ** 2)}, coords={"alpha": xs}).to_zarr(
        tmp_path / "h.zarr", consolidated=False)
    code, out, err = cli("plot", tmp_path / "h.zarr", "--out", tmp_path / "h.html")
    assert code == 0, err
    _check(tmp_path / "h.html", "html")


@pytest.mark.parametrize(("setup", "message"), [
    ("jpg", r"cannot write \S+f\.jpg: unknown figure format '\.jpg'; give --out a name ending "
            r"in \.png, \.pdf or \.html"),
    ("missing", r"surface store \S+nowhere\.zarr does not exist"),
    ("nothing computed", r"surface store \S+line\.zarr has no computed points; run the surface "
                         r"command that writes it \(again\)"),
    ("not a store", r"\S+empty\.zarr is not a readable surface store"),
])
def test_errors_are_one_line_exit_2(stores, tmp_path, cli, setup, message):
    import shutil

    store, out = stores["line"], tmp_path / "f.png"
    if setup == "jpg":
        out = tmp_path / "f.jpg"
    elif setup == "missing":
        store = tmp_path / "nowhere.zarr"
    elif setup == "nothing computed":  # no chunk can be verified any more
        store = tmp_path / "line.zarr"
        shutil.copytree(stores["line"], store)
        (store / CHECKSUM_FILE).write_text("garbage")
    else:
        store = tmp_path / "empty.zarr"
        store.mkdir()
    code, _, err = cli("plot", store, "--out", out)
    assert code == 2, err
    assert re.fullmatch(f"error: {message}.*\n", err), err
    assert not out.exists()


def test_error_exit_code_of_the_real_command(tmp_path):
    done = _lossurf("plot", tmp_path / "nowhere.zarr")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.fullmatch(r"error: surface store \S+ does not exist.*\n", done.stderr), done.stderr
