"""Permutation alignment: specs traced from the registry's models, exact function invariance,
planted permutations recovered, the assignment step against brute force, surfaces with
``align=True``, the before/after barrier comparison, its figure and the CLI flag."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from torch import nn

from lossurf import models, surface
from lossurf.alignment import (
    align,
    apply_permutation,
    compare_barriers,
    compare_endpoints,
    invert_permutation,
    permutation_hash,
    permutation_spec,
    random_permutation,
    weight_matching,
)
from lossurf.analysis.basins import barrier
from lossurf.errors import LossurfError
from lossurf.params import moving_keys
from lossurf.surface.evaluate import EvalData

#: Every registry model but the LSTM, small enough that a test takes a fraction of a second.
#: ``(name, options, input shape)``; dropout is on where the model has it (eval mode ignores it).
MODELS = [
    ("mlp", {"hidden": [12, 10]}, (1, 8, 8)),
    ("mlp", {"hidden": [12, 10], "batch_norm": True, "dropout": 0.2}, (1, 8, 8)),
    ("cnn-small", {"width": 0.5, "dropout": 0.2}, (1, 8, 8)),
    ("cnn-small", {"width": 0.5, "batch_norm": False}, (1, 8, 8)),
    ("vgg-small", {"width": 0.5, "dropout": 0.2}, (1, 8, 8)),
    ("nin-small", {"width": 0.5, "dropout": 0.2}, (1, 8, 8)),
    ("vgg", {"width": 0.0625}, (3, 32, 32)),
    ("vgg", {"width": 0.0625, "batch_norm": False}, (3, 16, 16)),
    ("nin", {"width": 0.0625}, (3, 32, 32)),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(MODELS)]


def _build(name: str, options: dict, seed: int = 0) -> nn.Module:
    return models.build({"name": name, "options": options}, seed=seed).eval()


def _varied(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with non-trivial batch-norm parameters and statistics (a fresh BN is the
    identity, which would hide a forgotten permutation) and positive BN shifts (so the NIN's
    final ReLU does not zero every logit)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        leaf = key.rsplit(".", 1)[-1]
        noise = torch.rand(value.shape, generator=gen) if value.is_floating_point() else None
        if leaf == "running_var":
            value = 0.5 + noise
        elif leaf == "running_mean":
            value = 0.2 * (noise - 0.5)
        elif leaf == "weight" and value.ndim == 1:  # BN scale
            value = 0.7 + 0.6 * noise
        elif leaf == "bias" and value.ndim == 1 and key.replace("bias", "running_mean") in out:
            value = 0.5 * noise
        out[key] = value.clone()
    return out


def _logits(model: nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    model.load_state_dict(state)
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(("name", "options", "shape"), MODELS, ids=IDS)
def test_permuting_keeps_logits_and_weight_matching_recovers_a_planted_permutation(name, options, shape):
    model = _build(name, options)
    a = _varied(model, 1)
    spec = permutation_spec(model)
    planted = random_permutation(spec, seed=3)
    assert any(not torch.equal(p, torch.arange(p.numel())) for p in planted.values())
    b = apply_permutation(a, spec, planted)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the weights really moved
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(0))
    reference = _logits(model, a, x)
    assert reference.abs().max() > 0.05  # a test on all-zero logits could not fail
    assert torch.allclose(_logits(model, b, x), reference, rtol=0, atol=1e-5)

    aligned, info = align(model, a, b, seed=0)
    assert all(torch.equal(aligned[k], a[k]) for k in a)  # bitwise: a permutation only moves
    inverse = invert_permutation(planted)
    assert info.permutation == {g: inverse[g].tolist() for g in inverse}
    assert info.permutation_sha256 == permutation_hash(inverse)
    keys = moving_keys(model)
    squared = sum(float(a[k].double().pow(2).sum()) for k in keys)  # <A, A>, the maximum
    assert info.objective_after == pytest.approx(squared, rel=1e-12)
    assert info.objective_before < info.objective_after
    assert info.distance_after == 0.0 and info.distance_before > 0
    assert info.converged


@pytest.mark.parametrize(("name", "options", "shape"), MODELS, ids=IDS)
def test_matching_two_different_networks_raises_the_objective_and_keeps_the_function(name, options, shape):
    model = _build(name, options)
    a = _varied(_build(name, options, seed=1), 1)
    b = _varied(_build(name, options, seed=2), 2)
    aligned, info = align(model, a, b, seed=5)
    keys = moving_keys(model)
    dot = lambda u, v: sum(float((u[k].double() * v[k].double()).sum()) for k in keys)  # noqa: E731
    assert info.objective_before == pytest.approx(dot(a, b), rel=1e-12)
    assert info.objective_after == pytest.approx(dot(a, aligned), rel=1e-12)
    assert info.objective_after > info.objective_before
    assert info.distance_after < info.distance_before
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(_logits(model, aligned, x), _logits(model, b, x), rtol=0, atol=1e-5)
    again, info2 = align(model, a, b, seed=5)  # seeded: the same answer twice
    assert info2.permutation == info.permutation


def test_spec_of_cnn_small_names_every_axis():
    model = _build("cnn-small", {"width": 0.5})
    spec = permutation_spec(model)
    assert [(g.name, g.size) for g in spec.groups] == [("features.conv1.conv", 8),
                                                       ("features.conv2.conv", 16)]
    conv2 = {(a.key, a.dim, a.block) for a in spec.group("features.conv2.conv").axes}
    assert conv2 == {
        ("features.conv2.conv.weight", 0, 1),
        ("features.conv2.bn.weight", 0, 1), ("features.conv2.bn.bias", 0, 1),
        ("features.conv2.bn.running_mean", 0, 1), ("features.conv2.bn.running_var", 0, 1),
        ("fc.weight", 1, 4),  # flatten after a 2x2 pool: 4 inputs per channel
    }
    assert not any(a.key.startswith("fc.") and a.dim == 0 for g in spec.groups for a in g.axes)


def test_apply_matches_a_naive_per_entry_permutation():
    """The blocked flatten permutation against an explicit loop over every fc entry."""
    model = _build("cnn-small", {"width": 0.5, "batch_norm": False})
    state = _varied(model, 0)
    spec = permutation_spec(model)
    perm = random_permutation(spec, seed=7)
    out = apply_permutation(state, spec, perm)
    p1, p2 = perm["features.conv1.conv"].tolist(), perm["features.conv2.conv"].tolist()
    fc, w2, w1 = state["fc.weight"], state["features.conv2.conv.weight"], state["features.conv1.conv.weight"]
    for i in range(fc.shape[0]):
        for c in range(16):
            for s in range(4):
                assert out["fc.weight"][i, c * 4 + s] == fc[i, p2[c] * 4 + s]
    for o in range(16):
        assert out["features.conv2.conv.bias"][o] == state["features.conv2.conv.bias"][p2[o]]
        for c in range(8):
            assert torch.equal(out["features.conv2.conv.weight"][o, c], w2[p2[o], p1[c]])
    for o in range(8):
        assert torch.equal(out["features.conv1.conv.weight"][o], w1[p1[o]])
    assert torch.equal(out["fc.bias"], state["fc.bias"])  # the output layer never moves


def test_one_layer_assignment_equals_brute_force():
    """With a single hidden layer, weight matching is one assignment problem: it must find
    the best of all 6! permutations."""
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    gen = torch.Generator().manual_seed(0)
    a = {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
    b = {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
    spec = permutation_spec(model)
    assert [g.name for g in spec.groups] == ["0"]
    keys = list(a)

    def score(p):
        permuted = apply_permutation(b, spec, {"0": torch.tensor(p)})
        return sum(float((a[k].double() * permuted[k].double()).sum()) for k in keys)

    best = max(itertools.permutations(range(6)), key=score)
    found = weight_matching(spec, a, b, keys, seed=0)
    assert found.permutation["0"].tolist() == list(best)
    assert found.objective_after == pytest.approx(score(best), rel=1e-12)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.out(h + self.fc2(h))


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.fc(torch.relu(self.fc(x))))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: models.build({"name": "lstm", "options": {"vocab_size": 30, "width": 8}}),
         r"cannot align model 'lstm' \(LSTMLM\): layer 'embedding' is a Embedding"),
        (_Residual, r"cannot align model _Residual: .*feeds 2 operations \(a branch\)"),
        (_Shared, r"cannot align model _Shared: layer 'fc' is used twice"),
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, groups=1), nn.Conv2d(4, 4, 3, groups=2)),
         r"is grouped \(groups=2\)"),
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(6, 2)),
         r"reads a conv activation without flatten"),
    ],
    ids=["lstm", "residual", "shared", "grouped", "no-flatten"],
)
def test_unsupported_models_are_refused_in_one_line(model, message):
    net = model()
    state = net.state_dict()
    with pytest.raises(LossurfError, match=message) as caught:
        align(net, state, state)
    assert "\n" not in str(caught.value)


def test_bad_arguments_are_refused():
    model = _build("mlp", {"hidden": [4]})
    state = model.state_dict()
    other = _build("mlp", {"hidden": [5]}).state_dict()
    with pytest.raises(LossurfError, match="different architectures"):
        align(model, state, other)
    with pytest.raises(LossurfError, match="seed must be an integer"):
        align(model, state, state, seed="one")
    with pytest.raises(LossurfError, match="max_iter must be a positive integer"):
        align(model, state, state, max_iter=0)


def _data(n: int = 96) -> EvalData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=gen)
    return EvalData(x=x, y=(x.mean(dim=(1, 2, 3)) > 0).long(), task="classification")


def test_surface_line_with_align_records_it_and_never_mixes_stores(tmp_path):
    model = _build("cnn-small", {"width": 0.5})
    a, b = _varied(_build("cnn-small", {"width": 0.5}, 1), 1), _varied(_build("cnn-small", {"width": 0.5}, 2), 2)
    data = _data()
    raw = surface.line(model, a, b, data, steps=3, bn="interpolate", progress=False)
    store = tmp_path / "aligned.zarr"
    ds = surface.line(model, a, b, data, steps=3, bn="interpolate", progress=False, align=True,
                      store=store)
    _, info = align(model, a, b)
    assert ds.attrs["alignment_permutation_sha256"] == [info.permutation_sha256]
    assert ds.attrs["alignment_objective_after"] == [pytest.approx(info.objective_after)]
    assert "alignment" not in raw.attrs
    # The end points compute the same functions; only the path between them differs.
    for alpha in (0.0, 1.0):
        assert float(ds.loss.sel(alpha=alpha)) == pytest.approx(float(raw.loss.sel(alpha=alpha)), abs=1e-5)
    assert float(ds.loss.sel(alpha=0.5)) != pytest.approx(float(raw.loss.sel(alpha=0.5)), abs=1e-4)
    with pytest.raises(LossurfError, match="different request"):
        surface.line(model, a, b, data, steps=3, bn="interpolate", progress=False, store=store)


def test_plane_with_align_aligns_every_point_after_the_first():
    model = _build("mlp", {"hidden": [12, 10]})
    a = _varied(model, 1)
    spec = permutation_spec(model)
    points = [a, apply_permutation(a, spec, random_permutation(spec, 1)),
              apply_permutation(a, spec, random_permutation(spec, 2))]
    data = _data()
    ds = surface.plane(model, points, data, kind="barycentric", steps=3, progress=False, align=True)
    assert len(ds.attrs["alignment_permutation_sha256"]) == 2
    assert ds.attrs["alignment_distance_after"] == [0.0, 0.0]
    # All three points are one network after alignment: the plane is flat at its loss.
    assert np.nanmax(ds.loss.values) - np.nanmin(ds.loss.values) < 1e-5


def test_compare_barriers_on_a_planted_permutation_and_on_two_networks():
    model = _build("cnn-small", {"width": 0.5})
    a = _varied(_build("cnn-small", {"width": 0.5}, 1), 1)
    spec = permutation_spec(model)
    b = apply_permutation(a, spec, random_permutation(spec, 4))
    data = _data()
    ds = compare_barriers(model, a, b, data, steps=5, bn="interpolate", progress=False)
    assert list(ds.alpha.values) == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Aligned, B *is* A: the line is constant; raw, it is not.
    assert np.ptp(ds.loss_aligned.values) < 1e-5 and ds.attrs["barrier_aligned"] < 1e-5
    assert np.ptp(ds.loss_raw.values) > 1e-3
    assert ds.attrs["barrier_raw"] == barrier(ds.loss_raw.values)
    # The raw half equals an ordinary line.
    line = surface.line(model, a, b, data, steps=5, bn="interpolate", progress=False)
    assert np.allclose(ds.loss_raw.values, line.loss.values, rtol=1e-6, atol=1e-7)
    assert {"accuracy_raw", "accuracy_aligned"} <= set(ds.data_vars)


def test_alignment_figure_draws_both_curves_and_refuses_other_data():
    from lossurf.plots.alignment import draw_alignment_barrier

    model = _build("mlp", {"hidden": [8]})
    a, b = _varied(_build("mlp", {"hidden": [8]}, 1), 1), _varied(_build("mlp", {"hidden": [8]}, 2), 2)
    ds = compare_barriers(model, a, b, _data(), steps=4, progress=False)
    fig = draw_alignment_barrier(ds)
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 4]
    assert len(lines) == 2
    assert np.allclose(lines[1].get_ydata(), ds.loss_aligned.values)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("raw (barrier") and labels[1].startswith("aligned (barrier")
    with pytest.raises(LossurfError, match="not an alignment comparison"):
        draw_alignment_barrier(ds.drop_vars("loss_raw"))


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    from lossurf.config import parse_config
    from lossurf.engine import train_experiment

    out = tmp_path_factory.mktemp("align-exp")
    config = parse_config({
        "data": {"name": "digits", "max_train": 128, "max_test": 64},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "epochs": 2, "batch_size": 32, "eval_subset": 64, "checkpoint_every": 1,
        "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.01}],
    })
    train_experiment(config, out)
    return out


def test_cli_align_on_line_plane_and_distance(experiment_dir, tmp_path, cli):
    import xarray as xr

    code, out, err = cli("surface", "line", experiment_dir, "--from", "sgd", "--to", "adam",
                         "--range", "0", "1", "--steps", "3", "--align", "--no-progress")
    assert code == 0, err
    store = experiment_dir / "surfaces" / "line-aligned-sgd-adam-train.zarr"
    assert str(store) in out
    assert xr.open_zarr(store).attrs["alignment"].startswith("weight matching")
    code, out, err = cli("surface", "plane", experiment_dir, "--points", "init,sgd,adam:epoch=1",
                         "--steps", "3", "--align", "--out", tmp_path / "p.zarr", "--no-progress")
    assert code == 0, err
    assert len(xr.open_zarr(tmp_path / "p.zarr").attrs["alignment_permutation_sha256"]) == 2
    code, out, err = cli("distance", experiment_dir, "sgd", "adam", "--align")
    assert code == 0, err
    raw, aligned = map(float, re.search(r"weight distance\s+([0-9.]+) raw, ([0-9.]+) aligned", out).groups())
    assert aligned <= raw


def test_compare_endpoints_uses_the_experiment_notation(experiment_dir):
    ds = compare_endpoints(experiment_dir, "sgd", "adam:epoch=2", steps=3, progress=False)
    assert ds.attrs["anchor_labels"] == ["sgd", "adam:epoch=2", "adam:epoch=2 (aligned)"]
    assert (experiment_dir / "surfaces" / "alignment-sgd-adam_epoch2-train.zarr").exists()
    again = compare_endpoints(experiment_dir, "sgd", "adam:epoch=2", steps=3, progress=False)
    assert np.array_equal(again.loss_aligned.values, ds.loss_aligned.values)  # resumed store
    assert ds.attrs["barrier_aligned"] == barrier(ds.loss_aligned.values)


def test_cli_align_command_prints_both_barriers_and_draws_them(experiment_dir, tmp_path, cli):
    figure = tmp_path / "align.png"
    code, out, err = cli("align", experiment_dir, "sgd", "adam", "--steps", "3",
                         "--out", tmp_path / "c.zarr", "--figure", figure, "--no-progress")
    assert code == 0, err
    raw, aligned = map(float, re.search(r"barrier sgd -> adam: ([0-9.]+) raw, ([0-9.]+) aligned", out).groups())
    ds = compare_endpoints(experiment_dir, "sgd", "adam", steps=3, store=tmp_path / "c.zarr",
                           progress=False)  # the same store, resumed: nothing recomputed
    assert raw == pytest.approx(ds.attrs["barrier_raw"], abs=1e-4)
    assert aligned == pytest.approx(ds.attrs["barrier_aligned"], abs=1e-4)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_align_refuses_an_unwritable_figure_before_the_surfaces(experiment_dir, cli,
                                                                    read_only_dir, tmp_path):
    code, _, err = cli("align", experiment_dir, "sgd", "adam", "--steps", "3", "--out",
                       tmp_path / "c.zarr", "--figure", read_only_dir / "a.png", "--no-progress")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"error: cannot write into {read_only_dir} (Read-only "
                                            "file system); pass a --figure path you may write to")
    assert not (tmp_path / "c.zarr").exists()  # refused before any work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sgd", "lion"], "unknown end point 'lion'"),
        (["sgd", "adam", "--figure", "out.txt"], r"must end in \.png or \.pdf"),
        (["sgd", "adam", "--steps", "1"], "at least two steps"),
    ],
)
def test_cli_align_command_bad_input(experiment_dir, cli, args, message):
    code, out, err = cli("align", experiment_dir, *args, "--no-progress")
    assert code == 2
    assert re.search(message, err) and len(err.strip().splitlines()) == 1
