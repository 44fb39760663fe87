"""The notebook API on DataLoaders and lists of batches, and with a user's loss function."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from lossurf.data.base import seeded_subset
from lossurf.errors import LossurfError
from lossurf.params import as_state
from lossurf.surface import basin, functional_distance, line, plane
from lossurf.surface.batches import from_batches, infer_task
from lossurf.surface.evaluate import EvalData, Evaluator


def make_model(seed: int, bn: bool = False, out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, out)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.3).long()
    return x[:60], y[:60], x[60:], y[60:]


def loader(x, y, batch_size=13):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def naive(model, state, x, y, loss_fn=F.cross_entropy):
    """One weight vector's loss (and class outputs), by a direct functional_call over all x."""
    with torch.no_grad():
        out = functional_call(model, state, (x,)).double()
    return float(loss_fn(out, y.double() if y.is_floating_point() else y)), out


def combine(w0, w1, alpha):
    return {k: (1 - alpha) * w0[k] + alpha * w1[k] for k in w0}


def test_loader_and_list_of_batches_equal_one_evaldata_and_a_naive_loop(toy):
    x, y, _, _ = toy
    model, w0, w1 = make_model(0), as_state(make_model(1)), as_state(make_model(2))
    kw = dict(range=(-0.5, 1.5), steps=5, progress=False)
    by_loader = line(model, w0, w1, loader(x, y), **kw)
    by_list = line(model, w0, w1, [(x[:7], y[:7]), (x[7:], y[7:])], **kw)
    by_tensors = line(model, w0, w1, EvalData(x, y, "classification"), **kw)
    for ds in (by_loader, by_list):
        np.testing.assert_array_equal(ds.loss.values, by_tensors.loss.values)
        np.testing.assert_array_equal(ds.accuracy.values, by_tensors.accuracy.values)
    assert by_loader.attrs["data"].startswith("batches (DataLoader) n=60 task=classification")
    for alpha in (-0.5, 0.5, 1.5):
        loss, out = naive(model, combine(w0, w1, alpha), x, y)
        assert float(by_loader.loss.sel(alpha=alpha)) == pytest.approx(loss, rel=1e-5)
        acc = float((out.argmax(1) == y).double().mean())
        assert float(by_loader.accuracy.sel(alpha=alpha)) == pytest.approx(acc)


def test_plane_basin_and_distance_take_loaders(toy):
    x, y, tx, ty = toy
    model = make_model(0)
    w = [as_state(make_model(s)) for s in (1, 2, 3)]
    ed = EvalData(tx, ty, "classification")
    p1 = plane(model, w, loader(tx, ty, 4), steps=4, progress=False)
    p2 = plane(model, w, ed, steps=4, progress=False)
    np.testing.assert_array_equal(p1.loss.values, p2.loss.values)
    b1 = basin(model, w[0], w[1], [(tx, ty)], steps=5, progress=False)
    b2 = basin(model, w[0], w[1], ed, steps=5, progress=False)
    np.testing.assert_array_equal(b1.loss.values, b2.loss.values)
    got = functional_distance(model, w[0], w[1], loader(tx, ty, 8))
    _, a = naive(model, w[0], tx, ty)
    _, b = naive(model, w[1], tx, ty)
    fdist = float((a.softmax(1) - b.softmax(1)).square().sum(1).mean().sqrt())
    disagree = float((a.argmax(1) != b.argmax(1)).double().mean())
    assert got["fdist"] == pytest.approx(fdist, rel=1e-5)
    assert got["disagreement"] == pytest.approx(disagree)


def bn_reference(model, state, bn_x, x, y, batch=128):
    """Recompute by hand: reset BN statistics, cumulative average over training batches, eval."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(bn_x), batch):
            net(bn_x[i:i + batch])
        net.eval()
        return float(F.cross_entropy(net(x).double(), y))


def test_batch_norm_statistics_come_from_training_batches(toy):
    x, y, tx, ty = toy
    model = make_model(0, bn=True)
    w0, w1 = as_state(make_model(1, bn=True)), as_state(make_model(2, bn=True))
    kw = dict(alphas=[0.0, 0.5, 1.0], progress=False)
    # training batches: their own inputs are the statistics' source
    own = line(model, w0, w1, loader(x, y), **kw)
    ref = line(model, w0, w1, EvalData(x, y, "classification", bn_x=x), **kw)
    np.testing.assert_array_equal(own.loss.values, ref.loss.values)
    assert "bn_from=these batches" in own.attrs["data"]
    # held-out batches: statistics from bn_data, the training loader
    held = line(model, w0, w1, loader(tx, ty), bn_data=loader(x, y, 16), **kw)
    ref = line(model, w0, w1, EvalData(tx, ty, "classification", bn_x=x), **kw)
    np.testing.assert_array_equal(held.loss.values, ref.loss.values)
    assert "bn_from=bn_data" in held.attrs["data"]
    for alpha in (0.0, 0.5, 1.0):
        expected = bn_reference(model, combine(w0, w1, alpha), x, tx, ty)
        assert float(held.loss.sel(alpha=alpha)) == pytest.approx(expected, rel=1e-5)
    wrong = line(model, w0, w1, loader(tx, ty), **kw)  # statistics of the held-out inputs
    assert not np.allclose(wrong.loss.values, held.loss.values)
    # more inputs than bn_examples: the same fixed, seeded subset EvalData.from_dataset takes
    big = torch.randn(1100, 5, generator=torch.Generator().manual_seed(1))
    got = from_batches(loader(tx, ty), bn_data=big, seed=3)
    assert torch.equal(got.bn_x, big[seeded_subset(1100, 1024, 3)])


def test_user_loss_is_exact_over_uneven_batches_on_both_strategies(toy):
    x, y, _, _ = toy
    model, w0, w1 = make_model(0), as_state(make_model(1)), as_state(make_model(2))

    def smoothed(outputs, targets):
        return F.cross_entropy(outputs, targets, label_smoothing=0.2)

    data = loader(x, y, batch_size=7)  # 60 = 8 * 7 + 4
    alphas = [-1.0, 0.25, 1.0, 2.0]
    loop = line(model, w0, w1, data, alphas=alphas, loss_fn=smoothed, batch_size=11,
                strategy="loop", progress=False)
    vmap = line(model, w0, w1, data, alphas=alphas, loss_fn=smoothed, batch_size=9,
                strategy="vmap", points_per_pass=3, progress=False)
    default = line(model, w0, w1, data, alphas=alphas, progress=False)
    for alpha in alphas:
        expected, _ = naive(model, combine(w0, w1, alpha), x, y, smoothed)
        # the naive loop a user would write over the loader's uneven batches, weighted by size
        total = sum(naive(model, combine(w0, w1, alpha), xb, yb, smoothed)[0] * len(yb)
                    for xb, yb in data) / len(y)
        assert total == pytest.approx(expected, rel=1e-6)
        for ds in (loop, vmap):
            assert float(ds.loss.sel(alpha=alpha)) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(loop.accuracy.values, default.accuracy.values)
    assert loop.attrs["loss"].endswith("smoothed") and "loss" not in default.attrs
    assert not np.allclose(loop.loss.values, default.loss.values)


def test_regression_loss_along_a_line_is_the_closed_form_quadratic():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, 5, generator=g)
    y = x @ torch.randn(5, 2, generator=g) + 0.3 * torch.randn(50, 2, generator=g)
    model = nn.Linear(5, 2)
    w0, w1 = as_state(make_linear(1)), as_state(make_linear(2))
    alphas = np.linspace(-1.0, 2.0, 7)
    ds = line(model, w0, w1, loader(x, y, batch_size=8), alphas=alphas, loss_fn=F.mse_loss,
              batch_size=6, progress=False)
    assert set(ds.data_vars) == {"loss"}  # no accuracy for real-valued targets
    # outputs are affine in the weights, so the residual is r0 + alpha * (r1 - r0) and the
    # mean squared error is the quadratic a * alpha^2 + b * alpha + c (float64, by hand)
    x64, y64 = x.double(), y.double()
    r0 = x64 @ w0["weight"].double().T + w0["bias"].double() - y64
    r1 = x64 @ w1["weight"].double().T + w1["bias"].double() - y64
    d = r1 - r0
    a, b, c = d.square().mean(), 2 * (r0 * d).mean(), r0.square().mean()
    expected = (a * torch.as_tensor(alphas) ** 2 + b * torch.as_tensor(alphas) + c).numpy()
    np.testing.assert_allclose(ds.loss.values, expected, rtol=2e-6)
    assert ds.attrs["data"].startswith("batches (DataLoader) n=50 task=regression")
    with pytest.raises(LossurfError, match="regression data .* need a loss: pass loss_fn="):
        line(model, w0, w1, loader(x, y), progress=False)
    with pytest.raises(LossurfError, match="functional distance .* not regression"):
        functional_distance(model, w0, w1, loader(x, y))
    with pytest.raises(LossurfError, match="functional distance .* not regression"):
        line(model, w0, w1, loader(x, y), loss_fn=F.mse_loss, reference=w0, progress=False)


def make_linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(5, 2)


def test_task_inference():
    ids = torch.zeros(4, 6, dtype=torch.long)
    assert infer_task(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)) == "classification"
    assert infer_task(ids, ids) == "language_model"
    assert infer_task(torch.randn(4, 3), torch.randn(4)) == "regression"
    with pytest.raises(LossurfError, match=r"cannot tell the task .*from_batches\(data, task=\.\.\.\)"):
        infer_task(torch.randn(4, 3), ids)
    got = from_batches([(torch.randn(4, 3), ids)], task="classification", bn_examples=0)
    assert got.task == "classification" and got.bn_x is None


def test_bad_batches_and_losses_get_one_line_messages(toy):
    x, y, _, _ = toy
    model, w0, w1 = make_model(0), as_state(make_model(1)), as_state(make_model(2))

    def run(data, **kw):
        return line(model, w0, w1, data, steps=2, progress=False, **kw)

    cases = [
        (lambda: run((b for b in loader(x, y))), r"data is a one-shot iterator \(generator\) "
                                                 r"and could be read only once; pass the DataLoader"),
        (lambda: run(iter(loader(x, y))), r"one-shot iterator"),
        (lambda: run([]), r"data yielded no batches"),
        (lambda: run((x, y)), r"got a tuple of tensors; pass \[\(x, y\)\]"),
        (lambda: run([{"x": x, "y": y}]), r"batch 0 is a dict, not an \(x, y\) pair"),
        (lambda: run([(x, y, y)]), r"batch 0 is a 3-tuple, not an \(x, y\) pair"),
        (lambda: run([(x, y[:5])]), r"batch 0 has 60 inputs and 5 targets"),
        (lambda: run([(x, y), (x[:, :4], y)]), r"batch 1 has examples of shape \(4,\)"),
        (lambda: run([(x.tolist(), y)]), r"batch 0 inputs is a list; batches must hold tensors"),
        (lambda: run(loader(x, y), loss_fn=lambda o, t: F.cross_entropy(o, t, reduction="none")),
         r"loss_fn must return the batch's mean loss as a scalar tensor, got shape \(60,\)"),
        (lambda: run(loader(x, y), loss_fn=lambda o, t: o[:, 5].mean()),
         r"loss_fn raised IndexError: .* on outputs of shape \(60, 3\) and targets of shape \(60,\)"),
        (lambda: run(loader(x, y), loss_fn="mse"), r"loss_fn is a str, not a callable"),
        (lambda: run(EvalData(x, y, "classification"), bn_data=x),
         r"bn_data applies when data is a DataLoader"),
        (lambda: run(loader(x, y), bn_data=torch.randn(4, 7)), r"bn_data inputs have shape \(7,\)"),
        (lambda: run(loader(x, y), bn_data=(b for b in [x])), r"bn_data is a one-shot iterator"),
        (lambda: run(loader(x, y), subset=0), r"subset must be at least 1 example"),
        (lambda: EvalData(x, y.float(), "classification"), r"use task='regression' and a loss_fn"),
    ]
    for call, message in cases:
        with pytest.raises(LossurfError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_subset_of_a_loader_is_the_seeded_subset_of_its_examples(toy):
    x, y, _, _ = toy
    got = from_batches(loader(x, y), subset=20, seed=5)
    keep = seeded_subset(60, 20, 5)
    assert torch.equal(got.x, x[keep]) and torch.equal(got.y, y[keep])
    model, w0 = make_model(0), as_state(make_model(1))
    direct = Evaluator(model, EvalData(x[keep], y[keep], "classification")).evaluate([w0], [[1.0]])
    ds = line(model, w0, w0, loader(x, y), subset=20, seed=5, alphas=[0.0, 1.0], progress=False)
    assert float(ds.loss[0]) == pytest.approx(float(direct["loss"][0]), rel=1e-12)


def test_a_store_computed_with_one_loss_is_not_resumed_with_another(toy, tmp_path):
    x, y, _, _ = toy
    model, w0, w1 = make_model(0), as_state(make_model(1)), as_state(make_model(2))
    store = tmp_path / "line.zarr"
    kw = dict(steps=3, store=store, progress=False)
    first = line(model, w0, w1, loader(x, y), loss_fn=F.multi_margin_loss, **kw)
    again = line(model, w0, w1, loader(x, y), loss_fn=F.multi_margin_loss, **kw)
    np.testing.assert_array_equal(first.loss.values, again.loss.values)
    with pytest.raises(LossurfError, match=r"different request \(loss differs"):
        line(model, w0, w1, loader(x, y), **kw)
