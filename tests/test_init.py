"""lossurf.models.init: the paper's exotic initializations N(-10, 0.01), N(-1, 1) (A.5)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lossurf.config import InitSpec
from lossurf.errors import LossurfError
from lossurf.models import build
from lossurf.models.init import apply_init


@pytest.fixture(scope="module")
def nin_half() -> dict:
    # NIN at half width: ~245k parameters, every kind of parameter (conv, BN scale/shift).
    return {"name": "nin", "options": {"width": 0.5}}


@pytest.mark.parametrize(("mean", "std"), [(-10.0, 0.01), (-1.0, 1.0)])
def test_normal_init_draws_every_parameter(nin_half: dict, mean: float, std: float) -> None:
    model = build({**nin_half, "init": {"scheme": "normal", "mean": mean, "std": std}}, seed=0)
    flat = []
    for name, p in model.named_parameters():
        values = p.detach().double().flatten()
        n = values.numel()
        flat.append(values)
        # each tensor on its own (BN scales included): mean within 6 standard errors
        assert abs(values.mean().item() - mean) < 6 * std / math.sqrt(n), name
        if n >= 100:  # std within 6 standard errors of a normal sample's std
            assert abs(values.std().item() / std - 1) < 6 / math.sqrt(2 * (n - 1)), name
    everything = torch.cat(flat)
    n = everything.numel()
    assert n > 200_000
    assert abs(everything.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert abs(everything.std().item() / std - 1) < 5 / math.sqrt(2 * n)
    # BN affine parameters are drawn too (not left at 1 and 0)
    bn = model.features.conv1.bn
    assert abs(bn.weight.mean().item() - mean) < 6 * std / math.sqrt(bn.weight.numel())


def test_normal_init_leaves_buffers(nin_half: dict) -> None:
    model = build({**nin_half, "init": {"scheme": "normal", "mean": -10.0, "std": 0.01}}, seed=0)
    default = build(nin_half, seed=0)
    buffers = dict(model.named_buffers())
    assert buffers  # BN statistics exist
    for name, buffer in default.named_buffers():
        assert torch.equal(buffers[name], buffer), name
    bn = model.features.conv2.bn
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert bn.num_batches_tracked.item() == 0


def test_default_scheme_keeps_the_constructor_weights() -> None:
    model = build({"name": "cnn-small"}, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_init(model, InitSpec(), torch.Generator().manual_seed(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_generator_makes_draws_reproducible_and_spares_global_rng() -> None:
    spec = InitSpec(scheme="normal", mean=-1.0, std=1.0)
    a, b, c = nn.Linear(30, 20), nn.Linear(30, 20), nn.Linear(30, 20)
    state = torch.get_rng_state()
    apply_init(a, spec, torch.Generator().manual_seed(3))
    apply_init(b, spec, torch.Generator().manual_seed(3))
    apply_init(c, spec, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)
    # Reference: the same generator drawing weight then bias, in parameter order.
    g = torch.Generator().manual_seed(3)
    weight = torch.empty(20, 30).normal_(-1.0, 1.0, generator=g)
    bias = torch.empty(20).normal_(-1.0, 1.0, generator=g)
    assert torch.equal(a.weight, weight) and torch.equal(a.bias, bias)


def test_seeded_build_with_normal_init_is_reproducible() -> None:
    spec = {"name": "vgg-small", "init": {"scheme": "normal", "mean": -1.0, "std": 1.0}}
    state = torch.get_rng_state()
    a, b = build(spec, seed=2).state_dict(), build(spec, seed=2).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build(spec, seed=3).state_dict()
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_tied_weights_drawn_once_and_stay_tied() -> None:
    spec = {
        "name": "lstm",
        "options": {"vocab_size": 40, "width": 8, "tie_weights": True},
        "init": {"scheme": "normal", "mean": -10.0, "std": 0.01},
    }
    model = build(spec, seed=0)
    assert model.decoder.weight is model.embedding.weight
    assert abs(model.embedding.weight.mean().item() + 10) < 0.01


def test_unknown_scheme() -> None:
    bogus = InitSpec.model_construct(scheme="xavier", mean=0.0, std=1.0)
    message = r"unknown init scheme 'xavier'; use one of: default, normal"
    with pytest.raises(LossurfError, match=message):
        apply_init(nn.Linear(2, 2), bogus)
