"""Low-loss curves (Garipov et al. 2018): geometry, the fit, the evaluation, resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lossurf import curves
from lossurf.config import parse_config
from lossurf.curves.bezier import curve_coefficients, point_state
from lossurf.curves.checkpoint import BEND, STATE, fit_in
from lossurf.curves.train import CurveTrainer
from lossurf.engine import train_experiment
from lossurf.errors import LossurfError
from lossurf.surface.evaluate import EvalData


# --- geometry ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bezier", "chain"])
def test_coefficients_are_exact_at_the_end_points_and_sum_to_one(kind):
    c = curve_coefficients(kind, [0.0, 1.0])
    assert c[0].tolist() == [1.0, 0.0, 0.0] and c[1].tolist() == [0.0, 0.0, 1.0]
    t = np.random.default_rng(0).uniform(0, 1, 50)
    np.testing.assert_allclose(curve_coefficients(kind, t).sum(axis=1), 1.0, rtol=0, atol=1e-15)
    grid = curves.curve_grid(kind, steps=11)
    assert grid.coords["t"][[0, 5, 10]].tolist() == [0.0, 0.5, 1.0]
    assert grid.anchors == ("start", "bend", "end") and grid.kind == f"curve-{kind}"


def test_coefficients_match_the_closed_forms():
    t = np.array([0.1, 0.25, 0.5, 0.7, 0.9])
    bez = curve_coefficients("bezier", t)
    np.testing.assert_array_equal(bez[:, 0], (1 - t) ** 2)
    np.testing.assert_array_equal(bez[:, 1], 2 * t * (1 - t))
    chain = curve_coefficients("chain", t)
    # naive piecewise: w1 + 2t (theta - w1) on [0, 1/2), theta + (2t - 1)(w2 - theta) after
    for row, ti in zip(chain, t):
        expected = [1 - 2 * ti, 2 * ti, 0.0] if ti < 0.5 else [0.0, 2 - 2 * ti, 2 * ti - 1]
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "spiral"}, "unknown curve kind 'spiral'"),
    ({"kind": "bezier", "ts": [0.0, 1.5]}, "must lie in \\[0, 1\\]"),
    ({"kind": "bezier", "steps": 1}, "at least two steps"),
])
def test_bad_curve_grids_are_refused(kwargs, message):
    with pytest.raises(LossurfError, match=message):
        curves.curve_grid(**kwargs)


# --- a small MLP: evaluation against a naive functional_call --------------------------------

def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def _mlp_problem():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    model = _mlp()
    states = []
    for scale in (0.5, 1.0, 1.5):
        states.append({k: v + scale * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()})
    return model, x, y, states


@pytest.mark.parametrize("kind", ["bezier", "chain"])
def test_curve_and_line_losses_match_a_naive_functional_call(kind):
    model, x, y, (w1, bend, w2) = _mlp_problem()
    ts = [0.0, 0.2, 0.5, 0.65, 1.0]
    ds = curves.curve_surface(model, w1, bend, w2, EvalData(x, y, "classification"), kind=kind,
                              ts=ts, progress=False)
    for t in ts:
        if kind == "bezier":
            c = [(1 - t) ** 2, 2 * t * (1 - t), t * t]
        else:
            c = [1 - 2 * t, 2 * t, 0.0] if t < 0.5 else [0.0, 2 - 2 * t, 2 * t - 1]
        params = {k: (c[0] * w1[k].double() + c[1] * bend[k].double() + c[2] * w2[k].double()).float()
                  for k in w1}
        out = functional_call(model, params, (x,))
        assert float(ds.loss.sel(t=t)) == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
        assert float(ds.accuracy.sel(t=t)) == pytest.approx((out.argmax(1) == y).float().mean().item())
        line = {k: ((1 - t) * w1[k].double() + t * w2[k].double()).float() for k in w1}
        out = functional_call(model, line, (x,))
        assert float(ds.loss_line.sel(t=t)) == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    # the curve starts and ends where the line does: the same weights, the same numbers
    assert float(ds.loss.sel(t=0.0)) == float(ds.loss_line.sel(t=0.0))
    assert float(ds.loss.sel(t=1.0)) == float(ds.loss_line.sel(t=1.0))
    assert ds.attrs["lossurf_kind"] == f"curve-{kind}" and len(ds.attrs["anchor_hashes"]) == 3
    assert ds.attrs["loss_max"] == pytest.approx(float(ds.loss.max()))


@pytest.mark.parametrize("kind", ["bezier", "chain"])
def test_end_points_are_the_minima_bitwise(kind):
    _, _, _, (w1, bend, w2) = _mlp_problem()
    for t, expected in ((0.0, w1), (1.0, w2)):
        point = point_state(kind, t, w1, bend, w2)
        assert all(torch.equal(point[k], expected[k]) for k in w1)


def test_fit_keeps_the_end_points_and_starts_at_the_midpoint():
    model, x, y, (w1, _, w2) = _mlp_problem()
    trainer = CurveTrainer(model, w1, w2, (x, y), lr=0.01, batch_size=32)
    mid = trainer.bend_state()
    assert all(torch.allclose(mid[k], 0.5 * (w1[k] + w2[k])) for k in w1)
    trainer.train_epoch(1)
    assert all(torch.equal(trainer.start[k], w1[k]) and torch.equal(trainer.end[k], w2[k]) for k in w1)
    assert any(not torch.equal(trainer.bend_state()[k], mid[k]) for k in w1)


# --- the toy: minima on a ring, the straight line crosses the centre's bump -----------------

class Ring(nn.Module):
    """loss(w) = (|w| - 1)^2: every point of the unit circle is a minimum, the centre a bump."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        radius = torch.sqrt((self.w * self.w).sum())
        return (radius - 1.0) ** 2 + 0.0 * x[:, 0]


def _mean(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return outputs.mean()


@pytest.mark.parametrize(("kind", "fraction"), [("bezier", 0.05), ("chain", 0.4)])
def test_trained_curve_follows_the_ring_below_the_line_barrier(kind, fraction):
    # two minima 143 degrees apart: the chord passes 0.32 from the centre, barrier 0.684^2
    w1, w2 = {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([-0.8, 0.6])}
    x, y = torch.zeros(32, 1), torch.zeros(32)
    bend = curves.fit_curve(Ring(), w1, w2, (x, y), kind=kind, epochs=25, lr=0.1, batch_size=8,
                            optimizer="sgd", loss_fn=_mean)
    ds = curves.curve_surface(Ring(), w1, bend, w2, EvalData(x, y, "regression"), kind=kind,
                              steps=41, loss_fn=_mean, progress=False)
    barrier = float(ds.loss_line.max())
    assert barrier == pytest.approx((1 - 0.6 / np.sqrt(3.6)) ** 2, rel=1e-3)
    assert float(ds.loss.max()) < fraction * barrier
    # the numbers at a few t are the ring's loss at the closed-form curve point
    for t in (0.25, 0.5, 0.8):
        c = curve_coefficients(kind, [t])[0]
        point = c[0] * w1["w"].double() + c[1] * bend["w"].double() + c[2] * w2["w"].double()
        expected = float((point.norm() - 1) ** 2)
        assert float(ds.loss.sel(t=t)) == pytest.approx(expected, rel=1e-4, abs=1e-7)


# --- resuming a fit -------------------------------------------------------------------------

def test_an_interrupted_fit_resumes_to_the_same_bytes(tmp_path):
    model, x, y, (w1, _, w2) = _mlp_problem()
    common = dict(kind="bezier", epochs=4, lr=0.05, batch_size=32, seed=3)
    curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path / "clean", **common)

    def stop(epoch, loss):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path / "cut", on_epoch=stop, **common)
    assert (tmp_path / "cut" / STATE).is_file() and not (tmp_path / "cut" / BEND).exists()
    seen = []
    curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path / "cut",
                     on_epoch=lambda e, _: seen.append(e), **common)
    assert seen == [3, 4]
    assert (tmp_path / "cut" / BEND).read_bytes() == (tmp_path / "clean" / BEND).read_bytes()
    assert not (tmp_path / "cut" / STATE).exists()
    # finished: read back, not trained again
    again = []
    curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path / "cut",
                     on_epoch=lambda e, _: again.append(e), **common)
    assert again == []
    with pytest.raises(LossurfError, match="made for another request \\(lr: 0.05 there, 0.1 now\\)"):
        curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path / "cut", **{**common, "lr": 0.1})


def test_a_damaged_state_is_one_error_naming_the_file(tmp_path):
    model, x, y, (w1, _, w2) = _mlp_problem()
    common = dict(epochs=3, batch_size=32)
    with pytest.raises(KeyboardInterrupt):
        curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path,
                         on_epoch=lambda e, _: (_ for _ in ()).throw(KeyboardInterrupt), **common)
    (tmp_path / STATE).write_bytes(b"not a torch file")
    with pytest.raises(LossurfError, match=f"curve state {tmp_path / STATE} is corrupted"):
        curves.fit_curve(model, w1, w2, (x, y), directory=tmp_path, **common)


def test_bad_api_input_is_named():
    model, x, y, (w1, _, w2) = _mlp_problem()
    with pytest.raises(LossurfError, match="epochs must be a positive integer"):
        curves.fit_curve(model, w1, w2, (x, y), epochs=0)
    with pytest.raises(LossurfError, match="must be a lossurf Dataset, an EvalData or a tuple"):
        curves.fit_curve(model, w1, w2, [x, y])
    with pytest.raises(LossurfError, match="unknown curve kind"):
        curves.fit_curve(model, w1, w2, (x, y), kind="spline")


# --- the CLI on a tiny trained digits experiment ----------------------------------------------

@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    config = parse_config({
        "data": {"name": "digits", "max_train": 128, "max_test": 64},
        "model": {"name": "cnn-small", "options": {"batch_norm": True}},
        "epochs": 2, "batch_size": 32, "eval_subset": 64, "checkpoint_every": 1,
        "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.003}],
    })
    train_experiment(config, out)
    return out


def _lossurf(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "lossurf.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_curve_killed_and_rerun_equals_a_clean_fit(experiment_dir, tmp_path):
    args = ["curve", experiment_dir, "sgd", "adam:epoch=1", "--epochs", "40", "--steps", "3",
            "--subset", "32", "--no-progress"]
    cut = tmp_path / "cut"
    proc = _lossurf(*args, "--out", cut)
    deadline = time.monotonic() + 300
    while not (cut / STATE).is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    epoch = torch.load(cut / STATE, weights_only=True)["epoch"]
    assert 1 <= epoch < 40 and not (cut / BEND).exists()
    rerun = _lossurf(*args, "--out", cut)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "trained (40 epochs)" in out
    clean = curves.experiment_curve(experiment_dir, "sgd", "adam:epoch=1", epochs=40, steps=3,
                                    subset=32, out=tmp_path / "clean", progress=False)
    assert (cut / BEND).read_bytes() == (clean.directory / BEND).read_bytes()
    import xarray as xr

    ds = xr.open_zarr(cut / "curve-train.zarr")
    assert set(ds.data_vars) >= {"loss", "accuracy", "loss_line", "accuracy_line"}
    assert ds.t.values.tolist() == [0.0, 0.5, 1.0]
    assert ds.attrs["curve_end_points"] == ["sgd", "adam:epoch=1"]
    assert ds.attrs["anchor_runs"] == ["sgd", "adam"] and ds.attrs["bn"] == "recompute"
    assert len(ds.attrs["curve_train_losses"]) == 40 and ds.attrs["curve_epochs"] == 40
    np.testing.assert_array_equal(ds.loss.values, clean.dataset.loss.values)
    # the end points are the runs' weights: the curve and the line agree there bitwise
    assert ds.loss.values[0] == ds.loss_line.values[0] and ds.loss.values[-1] == ds.loss_line.values[-1]
    again = _lossurf(*args, "--out", cut)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "reused (40 epochs)" in out, err


def test_cli_curve_default_folder(experiment_dir, cli):
    code, out, err = cli("curve", experiment_dir, "init", "sgd", "--kind", "chain", "--epochs", "1",
                         "--steps", "2", "--subset", "16", "--no-progress")
    assert code == 0, err
    store = experiment_dir / "curves" / "init-sgd-chain" / "curve-train.zarr"
    assert f"written to {store}" in out and "max loss along the curve" in out


@pytest.mark.parametrize(("args", "message"), [
    (["sgd", "lion"], "unknown end point 'lion'"),
    (["sgd", "adam:epoch=7"], "no checkpoint for epoch 7"),
    (["sgd", "sgd"], "are the same weights"),
    (["sgd", "adam", "--kind", "spiral"], "unknown curve kind 'spiral'"),
    (["sgd", "adam", "--epochs", "0"], "epochs must be a positive integer"),
    (["sgd", "adam", "--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["sgd", "adam", "--steps", "1"], "t needs at least two steps, got 1"),
])
def test_bad_curve_requests_exit_2_with_one_line(experiment_dir, tmp_path, cli, args, message):
    code, _, err = cli("curve", experiment_dir, *args, "--out", tmp_path / "c", "--no-progress")
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert message in err
    assert not (tmp_path / "c").exists()  # refused before the bend trains


# --- stores and figures ---------------------------------------------------------------------

def test_curve_store_is_reused_refused_for_another_bend_and_plotted(tmp_path):
    import xarray as xr

    from lossurf.plots import plot_store
    from lossurf.plots.curves_bezier import draw_curve

    model, x, y, (w1, bend, w2) = _mlp_problem()
    data = EvalData(x, y, "classification")
    store = tmp_path / "curve.zarr"
    first = curves.curve_surface(model, w1, bend, w2, data, steps=5, store=store, progress=False)
    opened = xr.open_zarr(store)
    np.testing.assert_array_equal(opened.loss_line.values, first.loss_line.values)
    again = curves.curve_surface(model, w1, bend, w2, data, steps=5, store=store, progress=False)
    np.testing.assert_array_equal(again.loss.values, first.loss.values)
    other = {k: v + 0.1 for k, v in bend.items()}
    with pytest.raises(LossurfError, match="computed for a different request"):
        curves.curve_surface(model, w1, other, w2, data, steps=5, store=store, progress=False)
    figure, notes = draw_curve(first)
    assert len(figure.axes) == 2 and notes == []
    assert [line.get_linestyle() for line in figure.axes[0].lines[::2]] == ["-", "--"]
    png = plot_store(store)
    assert png == store.with_suffix(".png") and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LossurfError, match="not a curve Dataset"):
        draw_curve(first.drop_vars("loss_line"))
