"""compute_surface: xarray results, zarr stores written chunk by chunk, resume after a kill."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn
from torch.func import functional_call

from lossurf.backends import LocalBackend, make_backend
from lossurf.errors import LossurfError
from lossurf.params import as_state, combine
from lossurf.surface.paths import line_grid
from lossurf.surface.plane import barycentric_grid
from lossurf.surface.store import chunk_layout, compute_surface


class Killed(RuntimeError):
    pass


class NaiveEvaluator:
    """One point at a time: materialize the weights, run the model (the reference loop)."""

    bn = "interpolate"

    def __init__(self, model, x, y, kill_after=None):
        self.model, self.x, self.y, self.kill_after = model, x, y, kill_after
        self.calls, self.points = 0, 0

    def evaluate(self, anchors, coefficients, reference=None, progress=None):
        if self.kill_after is not None and self.calls >= self.kill_after:
            raise Killed("simulated kill")
        self.calls += 1
        out = {"loss": [], "accuracy": []}
        if reference is not None:
            out.update(fdist=[], disagreement=[])
            with torch.no_grad():
                ref = functional_call(self.model, dict(reference), (self.x,))
        for row in np.asarray(coefficients, dtype=np.float64):
            with torch.no_grad():
                logits = functional_call(self.model, combine(anchors, row), (self.x,))
            out["loss"].append(float(nn.functional.cross_entropy(logits.double(), self.y)))
            out["accuracy"].append(float((logits.argmax(1) == self.y).double().mean()))
            if reference is not None:
                diff = logits.double().softmax(1) - ref.double().softmax(1)
                out["fdist"].append(float(diff.pow(2).sum(1).mean().sqrt()))
                out["disagreement"].append(float((logits.argmax(1) != ref.argmax(1)).double().mean()))
            self.points += 1
        return {k: np.asarray(v) for k, v in out.items()}


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


def test_in_memory_line_equals_point_by_point(setup):
    model, anchors, x, y = setup
    grid = line_grid(range=(-0.5, 2.0), steps=11)
    ds = compute_surface(NaiveEvaluator(model, x, y), anchors[:2], grid, chunk_points=4, progress=False)
    assert list(ds.data_vars) == ["loss", "accuracy"] and ds.loss.dims == ("alpha",)
    np.testing.assert_array_equal(ds.alpha.values, grid.coords["alpha"])
    for alpha, loss in zip(ds.alpha.values, ds.loss.values):
        state = {k: (1 - alpha) * anchors[0][k] + alpha * anchors[1][k] for k in anchors[0]}
        with torch.no_grad():
            expect = nn.functional.cross_entropy(functional_call(model, state, (x,)).double(), y)
        assert loss == pytest.approx(float(expect), rel=1e-5)


def test_store_reopens_with_provenance_attrs(setup, tmp_path):
    model, anchors, x, y = setup
    path = tmp_path / "line.zarr"
    ds = compute_surface(
        NaiveEvaluator(model, x, y), anchors[:2], line_grid(steps=5), store=path,
        reference=anchors[0], attrs={"anchor_runs": ["init", "adam"], "data": "toy n=40"},
        chunk_points=2, progress=False,
    )
    opened = xr.open_zarr(path)
    assert set(opened.data_vars) == {"loss", "accuracy", "fdist", "disagreement", "computed"}
    assert bool(opened.computed.all())
    xr.testing.assert_identical(opened.drop_vars("computed").load(), ds)
    attrs = opened.attrs
    assert attrs["anchor_roles"] == ["start", "end"] and attrs["anchor_runs"] == ["init", "adam"]
    assert len(attrs["anchor_hashes"]) == 2 and len(attrs["reference_hash"]) == 64
    assert attrs["bn"] == "interpolate" and attrs["data"] == "toy n=40"
    assert attrs["torch_version"] == torch.__version__ and attrs["lossurf_version"]
    assert "alpha=0 is start" in attrs["geometry"]
    assert float(opened.fdist[0]) == pytest.approx(0.0, abs=1e-12)  # alpha=0 is the reference


@pytest.mark.parametrize("kind", ["line", "plane"])
def test_killed_then_resumed_equals_one_go_and_computes_only_missing(setup, tmp_path, kind):
    model, anchors, x, y = setup
    grid = line_grid(steps=10) if kind == "line" else barycentric_grid(steps=5)
    used = anchors[:2] if kind == "line" else anchors
    chunk = 3 if kind == "line" else 10  # plane: 2 rows of 5 per chunk
    one_go = compute_surface(NaiveEvaluator(model, x, y), used, grid, chunk_points=chunk, progress=False)

    path = tmp_path / "s.zarr"
    killed = NaiveEvaluator(model, x, y, kill_after=2)
    with pytest.raises(Killed):
        compute_surface(killed, used, grid, store=path, chunk_points=chunk, progress=False)
    done = xr.open_zarr(path).computed.values.reshape(-1)
    assert done.sum() == killed.points == 2 * chunk

    resumed = NaiveEvaluator(model, x, y)
    ds = compute_surface(resumed, used, grid, store=path, chunk_points=chunk, progress=False)
    assert resumed.points == grid.num_points - 2 * chunk
    xr.testing.assert_equal(ds, one_go)

    again = NaiveEvaluator(model, x, y)  # a finished store computes nothing
    compute_surface(again, used, grid, store=path, chunk_points=chunk, progress=False)
    assert again.points == 0


def test_store_for_another_request_is_refused(setup, tmp_path):
    model, anchors, x, y = setup
    path = tmp_path / "s.zarr"
    ev = NaiveEvaluator(model, x, y)
    compute_surface(ev, anchors[:2], line_grid(steps=3), store=path, progress=False)
    with pytest.raises(LossurfError, match="anchor_hashes differs.*pass a new --out or delete it"):
        compute_surface(ev, [anchors[0], anchors[2]], line_grid(steps=3), store=path, progress=False)
    with pytest.raises(LossurfError, match="grid_fingerprint differs.*pass a new --out"):
        compute_surface(ev, anchors[:2], line_grid(steps=4), store=path, progress=False)
    with pytest.raises(LossurfError, match="data differs"):
        compute_surface(ev, anchors[:2], line_grid(steps=3), store=path, attrs={"data": "other"}, progress=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    with pytest.raises(LossurfError, match=r"not a lossurf surface store \(GroupNotFoundError\); pass a new --out or delete it"):
        compute_surface(ev, anchors[:2], line_grid(steps=3), store=junk, progress=False)


def test_bad_arguments(setup):
    model, anchors, x, y = setup
    ev = NaiveEvaluator(model, x, y)
    with pytest.raises(LossurfError, match="needs 2 weight vectors"):
        compute_surface(ev, anchors, line_grid(steps=3), progress=False)
    with pytest.raises(LossurfError, match="chunk_points must be a positive integer"):
        compute_surface(ev, anchors[:2], line_grid(steps=3), chunk_points=0, progress=False)
    other = as_state(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)))
    with pytest.raises(LossurfError, match="different architectures: key '2.weight'"):
        compute_surface(ev, [anchors[0], other], line_grid(steps=3), progress=False)


def test_chunk_layout_covers_every_point_once_in_whole_rows():
    shape, chunks = chunk_layout((7, 5), 12)
    assert shape == (2, 5)
    flat = np.concatenate(chunks)
    np.testing.assert_array_equal(flat, np.arange(35))
    assert [len(c) for c in chunks] == [10, 10, 10, 5]
    assert chunk_layout((9,), 4)[0] == (4,) and chunk_layout((3, 50), 4)[0] == (1, 50)


class ReversedBackend:
    """Yields results in reverse order, as a distributed backend may."""

    def map(self, fn, items):
        for item in reversed(list(items)):
            yield fn(item)


def test_out_of_order_backend_and_progress_bar(setup, tmp_path):
    model, anchors, x, y = setup
    grid = line_grid(steps=7)
    ref = compute_surface(NaiveEvaluator(model, x, y), anchors[:2], grid, chunk_points=2, progress=False)
    ds = compute_surface(NaiveEvaluator(model, x, y), anchors[:2], grid, chunk_points=2,
                         backend=ReversedBackend(), store=tmp_path / "r.zarr", progress=True)
    xr.testing.assert_equal(ds, ref)


def test_backend_registry():
    assert isinstance(make_backend("local"), LocalBackend)
    assert list(LocalBackend().map(lambda v: v * 2, [1, 2])) == [2, 4]
    with pytest.raises(LossurfError, match=r"unknown backend 'mpi'; choose one of \['local'"):
        make_backend("mpi")


def test_work_items_and_task_pickle(setup):
    import pickle

    from lossurf.surface.store import ChunkTask

    model, anchors, x, y = setup
    grid = line_grid(steps=4)
    task = ChunkTask(NaiveEvaluator(model, x, y), tuple(anchors[:2]), grid.flat_coefficients())
    item = (1, np.array([2, 3]))
    index, points, values = pickle.loads(pickle.dumps(task))(pickle.loads(pickle.dumps(item)))
    assert index == 1 and points.tolist() == [2, 3] and values["loss"].shape == (2,)
    np.testing.assert_array_equal(values["loss"], task(item)[2]["loss"])


def test_store_in_a_new_nested_folder(setup, tmp_path):
    model, anchors, x, y = setup
    path = tmp_path / "a" / "b" / "line.zarr"
    compute_surface(NaiveEvaluator(model, x, y), anchors[:2], line_grid(steps=3), store=path, progress=False)
    assert bool(xr.open_zarr(path).computed.all())
