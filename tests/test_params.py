"""State-dict helpers: moving keys, flat vectors, norms, affine combinations, hashes."""

import numpy as np
import pytest
import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.params import (
    as_state,
    check_compatible,
    combine,
    distance,
    flatten,
    moving_keys,
    norm,
    state_hash,
    unflatten,
)


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked += 7
    return net


def test_moving_keys_parameters_then_float_buffers_never_integers():
    net = bn_net()
    params = ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert moving_keys(net) == params
    with_buffers = moving_keys(net, buffers=True)
    assert set(with_buffers) == set(params) | {"1.running_mean", "1.running_var"}
    assert "1.num_batches_tracked" not in with_buffers
    # a bare state dict gives the same answer by dtype and torch's BN buffer names
    assert moving_keys(net.state_dict()) == params
    assert moving_keys(net.state_dict(), buffers=True) == with_buffers


def test_flatten_unflatten_norm_distance_match_dense():
    a, b = as_state(bn_net(0)), as_state(bn_net(1))
    keys = moving_keys(a)
    flat = flatten(a, keys)
    dense = np.concatenate([a[k].numpy().ravel() for k in keys]).astype(np.float64)
    np.testing.assert_array_equal(flat.numpy(), dense)
    back = unflatten(flat, a, keys)
    for k in keys:
        assert back[k].dtype == a[k].dtype and torch.equal(back[k], a[k])
    dense_b = np.concatenate([b[k].numpy().ravel() for k in keys]).astype(np.float64)
    assert norm(a, keys) == pytest.approx(np.linalg.norm(dense), rel=1e-12)
    assert distance(a, b, keys) == pytest.approx(np.linalg.norm(dense - dense_b), rel=1e-12)
    with pytest.raises(LossurfError, match="same keys"):
        unflatten(flat[:-1], a, keys)


def test_combine_one_hot_is_bitwise_and_mixture_is_dense():
    a, b = as_state(bn_net(0)), as_state(bn_net(1))
    before = {k: v.clone() for k, v in a.items()}
    same = combine([a, b], [1.0, 0.0])
    for k in a:
        assert torch.equal(same[k], a[k])
    mixed = combine([a, b], [0.3, 0.7])
    for k in a:
        if a[k].is_floating_point():
            expect = 0.3 * a[k].double() + 0.7 * b[k].double()
            torch.testing.assert_close(mixed[k].double(), expect, rtol=1e-6, atol=1e-7)
        else:  # integer buffers come from the anchor with the largest weight
            assert torch.equal(mixed[k], b[k])
    for k in a:  # nothing passed in is modified
        assert torch.equal(a[k], before[k])
    with pytest.raises(LossurfError, match="one per anchor"):
        combine([a, b], [1.0])


def test_state_hash_is_content_based():
    a = as_state(bn_net(0))
    h = state_hash(a)
    assert len(h) == 64
    assert state_hash(dict(reversed(list(a.items())))) == h
    assert state_hash({k: v.clone() for k, v in a.items()}) == h
    changed = {k: v.clone() for k, v in a.items()}
    changed["4.bias"][0] += 1e-6
    assert state_hash(changed) != h
    renamed = dict(a)
    renamed["extra"] = renamed.pop("4.bias")
    assert state_hash(renamed) != h


def test_check_compatible_names_the_first_differing_key():
    a = as_state(bn_net(0))
    other = as_state(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4)))
    check_compatible([a, as_state(bn_net(1))])
    with pytest.raises(LossurfError, match=r"different architectures: key '4.weight'"):
        check_compatible([a, other], ["sgd", "adam"])
    missing = dict(a)
    del missing["0.bias"]
    with pytest.raises(LossurfError, match=r"key '0.bias' \(sgd has it, adam does not\)"):
        check_compatible([a, missing], ["sgd", "adam"])


def test_as_state_rejects_non_state_dicts():
    with pytest.raises(LossurfError, match="state dict"):
        as_state([1, 2])
    with pytest.raises(LossurfError, match="not a tensor"):
        as_state({"w": 1.0})
