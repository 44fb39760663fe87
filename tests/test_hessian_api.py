"""lossurf.hessian.analyze and friends: numbers, attrs, and the resumable zarr store."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import xarray as xr

from lossurf import hessian
from lossurf.errors import LossurfError
from lossurf.hessian import api
from _hessian_models import tiny_data, dense_hessian, tiny_model


@pytest.fixture(scope="module")
def problem():
    model, data = tiny_model(True), tiny_data()
    h, _, _ = dense_hessian(model, data)
    return model, data, h


def test_analyze_matches_the_dense_hessian_and_records_its_settings(problem):
    model, data, h = problem
    ds = hessian.analyze(model, model.state_dict(), data, top=3, tol=1e-9, max_iter=300,
                         trace=True, trace_samples=(20, 20), density=True, density_steps=30,
                         sharpness=[1e-3, 1e-2], seed=7)
    evals = torch.linalg.eigvalsh(h).flip(0).numpy()
    np.testing.assert_allclose(ds.eigenvalues.values, evals[:3], rtol=1e-6)
    assert ds.eigenvectors.shape == (3, h.shape[0])
    assert abs(float(ds.trace) - float(torch.trace(h))) <= 5 * float(ds.trace_stderr)
    assert np.trapezoid(ds.density.values, ds.eigenvalue.values) == pytest.approx(h.shape[0], rel=1e-6)
    assert (ds.eps_sharpness.values > 0).all() and ds.eps_sharpness.sel(eps=1e-2) > ds.eps_sharpness.sel(eps=1e-3)
    a = ds.attrs
    assert a["topk_tol"] == 1e-9 and a["topk_converged"] and 3 <= a["topk_iterations"] <= 300
    assert a["trace_iterations"] == 20 and a["density_iterations"] == 30 and a["topk_seed"] == 7
    assert a["parameters"] == h.shape[0] and a["dtype"] == "float64"
    assert a["data"].startswith("custom n=90") and "torch_version" in a and "lossurf_version" in a
    # the single-purpose functions agree with analyze
    top = hessian.top_eigenpairs(model, model.state_dict(), data, k=3, tol=1e-9, max_iter=300, seed=7)
    np.testing.assert_allclose(top.eigenvalues.values, ds.eigenvalues.values, rtol=1e-9)
    assert set(top.data_vars) == {"eigenvalues", "residuals", "eigenvectors"}


def test_store_reuses_finished_parts_and_refuses_other_requests(problem, tmp_path, monkeypatch):
    model, data, _ = problem
    store = tmp_path / "h.zarr"
    first = hessian.analyze(model, model.state_dict(), data, top=2, trace=True, store=store,
                            attrs={"endpoint": "adam"})
    assert xr.open_zarr(store, group="topk", consolidated=False).eigenvalues.shape == (2,)
    calls = []
    real = dict(api._COMPUTE)
    monkeypatch.setattr(api, "_COMPUTE", {k: (lambda op, r, k=k: calls.append(k) or real[k](op, r))
                                          for k in real})
    again = hessian.analyze(model, model.state_dict(), data, top=2, trace=True, store=store)
    assert calls == []  # nothing recomputed
    np.testing.assert_array_equal(again.eigenvalues.values, first.eigenvalues.values)
    assert again.attrs["endpoint"] == "adam"
    more = hessian.analyze(model, model.state_dict(), data, top=2, density=True,
                           density_steps=20, store=store)
    assert calls == ["density"] and "density" in more and "trace" not in more
    assert set(hessian.load(store).data_vars) >= {"eigenvalues", "trace", "density"}
    with pytest.raises(LossurfError, match="topk part of .* other settings"):
        hessian.analyze(model, model.state_dict(), data, top=4, store=store)
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with pytest.raises(LossurfError, match="different request \\(weights_hash differs"):
        hessian.analyze(model, other, data, top=2, store=store)


def test_a_killed_part_leaves_the_finished_ones(problem, tmp_path, monkeypatch):
    model, data, _ = problem
    store = tmp_path / "k.zarr"

    def killed(op, request):
        raise KeyboardInterrupt

    monkeypatch.setitem(api._COMPUTE, "trace", killed)
    with pytest.raises(KeyboardInterrupt):
        hessian.analyze(model, model.state_dict(), data, top=1, trace=True, store=store)
    assert (store / "topk").is_dir() and not (store / "trace").exists()
    assert not list(store.glob(".tmp-*"))
    monkeypatch.undo()
    ds = hessian.analyze(model, model.state_dict(), data, top=1, trace=True, store=store)
    assert np.isfinite(float(ds.trace))


def test_bad_requests_are_named(problem, tmp_path):
    model, data, _ = problem
    with pytest.raises(LossurfError, match="nothing to compute"):
        hessian.analyze(model, model.state_dict(), data, top=None)
    with pytest.raises(LossurfError, match="--top must be at most the number of parameters"):
        hessian.top_eigenpairs(model, model.state_dict(), data, k=10_000)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text("{not json")
    with pytest.raises(LossurfError, match="not a lossurf Hessian store"):
        hessian.analyze(model, model.state_dict(), data, top=1, store=tmp_path / "junk")
    with pytest.raises(LossurfError, match="not a lossurf Hessian store"):
        hessian.load(tmp_path)


def test_a_regular_file_as_store_is_called_a_file(problem, tmp_path):
    model, data, _ = problem
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for store, named in ((afile, afile), (afile / "h.zarr", afile)):
        with pytest.raises(LossurfError) as info:
            hessian.analyze(model, model.state_dict(), data, top=1, store=store)
        assert str(info.value) == (f"{named} is a file, not a Hessian store (a zarr directory) "
                                   "or a folder; pass another --out")
        assert afile.read_text() == "mine\n"


@pytest.mark.parametrize(("options", "message"), [
    ({"top": -1}, "--top must be a whole number of eigenpairs"),
    ({"top": 2.5}, "--top must be a whole number of eigenpairs"),
    ({"top": 10_000}, "--top must be at most the number of parameters"),
    ({"top": 3, "max_iter": 2}, "--top 3 asks for more eigenpairs than the 2 Lanczos steps"),
    ({"tol": 0}, "--tol must be a number between 0 and 1"),
    ({"tol": 1.5}, "--tol must be a number between 0 and 1"),
    ({"sharpness": [1e-3, -1]}, "--sharpness must be a positive eps"),
    ({"sharpness": [0]}, "--sharpness must be a positive eps"),
    ({"sharpness": [1e-3], "sharpness_method": "adam"}, "unknown sharpness method 'adam'"),
    ({"sharpness": [1e-3], "sharpness_steps": 0}, "steps must be a positive integer"),
    ({"trace": True, "trace_tol": 0}, "tol must be a positive number"),
    ({"trace": True, "trace_samples": (1, 5)}, "min_samples must be an integer of at least 2"),
    ({"density": True, "density_probes": 0}, "probes must be a positive integer"),
    ({"density": True, "sigma": -1}, "sigma must be a positive fraction"),
    ({"density": True, "points": 1}, "points must be an integer of at least 2"),
])
def test_bad_settings_are_refused_before_the_store_is_made(problem, tmp_path, options, message):
    model, data, _ = problem
    store = tmp_path / "h.zarr"
    with pytest.raises(LossurfError, match=re.escape(message)):
        hessian.analyze(model, model.state_dict(), data, store=store, **options)
    assert not store.exists()


def test_top_zero_means_none_as_in_the_cli(problem):
    model, data, _ = problem
    ds = hessian.analyze(model, model.state_dict(), data, top=0, trace=True,
                         trace_samples=(2, 2))
    assert "eigenvalues" not in ds and "trace" in ds
