"""lossurf.optim registry: names, building, convergence of every method, user errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.optim import OPTIMIZERS, RungeKutta, build, names, parse_name

DT = torch.float64


# Sensible learning rates per base (adadelta's lr scales its unit-consistent step).
LRS = {"sgd": 0.1, "sgdm": 0.05, "rmsprop": 0.01, "adadelta": 5.0, "adam": 0.02, "adagrad": 0.1}
ALL = list(LRS) + ["rk2-heun", "adam+rk2-heun", "sgdm+rk2-ralston", "rk2-midpoint"]


def _lr(name: str) -> float:
    base, _ = parse_name(name)
    return LRS[base]


def _run(name: str, model: nn.Module, loss_fn, steps: int) -> tuple[float, float]:
    opt = build(name, model.parameters(), lr=_lr(name))

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with torch.no_grad():
        first = float(loss_fn())
    for _ in range(steps):
        opt.step(closure)
    with torch.no_grad():
        return first, float(loss_fn())


def test_registry_contents():
    assert list(OPTIMIZERS) == ["sgd", "sgdm", "rmsprop", "adadelta", "adam", "adagrad"]
    assert OPTIMIZERS["sgdm"].cls is torch.optim.SGD
    assert OPTIMIZERS["sgdm"].defaults == {"momentum": 0.9}
    all_names = names()
    for expected in ("sgd", "adagrad", "rk2-heun", "rk2-euler", "rk2", "adam+rk2"):
        assert expected in all_names
    for expected in ("adam+rk2-heun", "sgdm+rk2-ralston", "adagrad+rk2-midpoint"):
        assert expected in all_names
    assert len(all_names) == len(set(all_names)) == 6 + 5 + 6 * 5


@pytest.mark.parametrize("name", [n for n in names() if not n.endswith("rk2")])
def test_every_name_builds(name):
    opt = build(name, [nn.Parameter(torch.zeros(2))], lr=0.01)
    assert isinstance(opt, RungeKutta) == ("rk2" in name)


def test_build_matches_torch_defaults():
    p = [nn.Parameter(torch.zeros(2))]
    assert build("sgd", p, lr=0.1).param_groups[0]["momentum"] == 0
    assert build("sgdm", p, lr=0.1).param_groups[0]["momentum"] == 0.9
    assert build("sgdm", p, lr=0.1, momentum=0.5).param_groups[0]["momentum"] == 0.5
    adam = build("adam+rk2-heun", p, lr=0.1, betas=(0.8, 0.99))
    assert isinstance(adam.base, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.8, 0.99)
    rk = build("rk2-ralston", p, lr=0.1)
    assert isinstance(rk.base, torch.optim.SGD) and rk.param_groups[0]["momentum"] == 0
    custom = build("adam+rk2", p, lr=0.1, tableau=[0.25, 0.75, 2 / 3], minibatch="next")
    assert custom.tableau.as_tuple() == (0.25, 0.75, 2 / 3) and custom.minibatch == "next"
    assert parse_name(" Adam+RK2-Heun ") == ("adam", "heun")
    assert parse_name("rk2-midpoint") == ("sgd", "midpoint")


@pytest.mark.parametrize("name", ALL)
def test_lowers_quadratic(name):
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=g, dtype=DT)
    a = m @ m.T / 4 + 0.5 * torch.eye(4, dtype=DT)
    theta = nn.Parameter(torch.randn(4, generator=g, dtype=DT))
    model = nn.ParameterList([theta])
    first, last = _run(name, model, lambda: 0.5 * theta @ a @ theta, 150)
    assert last < 0.1 * first, (first, last)


@pytest.mark.parametrize("name", ALL)
def test_lowers_mlp_regression(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).to(DT)
    x = torch.randn(64, 2, dtype=DT)
    y = torch.sin(2 * x[:, :1]) * x[:, 1:]
    first, last = _run(name, model, lambda: ((model(x) - y) ** 2).mean(), 150)
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("name", ["sgdm", "adam", "adagrad", "rk2-heun", "adam+rk2-heun"])
def test_lowers_mlp_classification(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(DT)
    x = torch.randn(128, 2, dtype=DT)
    labels = (x[:, 0] * x[:, 1] > 0).long()  # XOR-like quadrants
    loss_fn = lambda: nn.functional.cross_entropy(model(x), labels)  # noqa: E731
    first, last = _run(name, model, loss_fn, 200)
    accuracy = (model(x).argmax(1) == labels).double().mean()
    assert last < 0.6 * first and accuracy > 0.85, (first, last, float(accuracy))


# --- User errors ----------------------------------------------------------------------------


def _p():
    return [nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize(
    "name", ["adamw", "rk4-heun", "adam+rk2-foo", "adam+", "+rk2-heun", "lbfgs"]
)
def test_unknown_name_lists_valid_names(name):
    valid = r"sgd, sgdm, rmsprop, adadelta, adam, adagrad.*rk2-<tableau>.*heun"
    with pytest.raises(LossurfError, match=rf"unknown optimizer '{re.escape(name)}'.*{valid}"):
        build(name, _p(), lr=0.1)


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_lr_named(lr):
    with pytest.raises(LossurfError, match=rf"invalid learning rate lr={re.escape(repr(lr))}"):
        build("adam", _p(), lr=lr)


def test_unknown_option_named():
    match = r"unknown option\(s\) 'betaz' for optimizer 'adam'.*valid options: betas"
    with pytest.raises(LossurfError, match=match):
        build("adam", _p(), lr=0.1, betaz=(0.9, 0.99))
    with pytest.raises(LossurfError, match=r"unknown option\(s\) 'q1'.*tableau, minibatch"):
        build("adam+rk2-heun", _p(), lr=0.1, q1=0.5)


def test_rk_options_on_base_rejected():
    match = r"tableau only apply to Runge-Kutta optimizers, not 'adam'"
    with pytest.raises(LossurfError, match=match):
        build("adam", _p(), lr=0.1, tableau="heun")


def test_sgd_momentum_rejected():
    with pytest.raises(LossurfError, match=r"'momentum' is not allowed for 'sgd'.*use 'sgdm'"):
        build("sgd", _p(), lr=0.1, momentum=0.9)


def test_tableau_option_errors():
    with pytest.raises(LossurfError, match=r"needs the option tableau=\(a1, a2, q1\)"):
        build("rk2", _p(), lr=0.1)
    with pytest.raises(LossurfError, match=r"names its tableau already"):
        build("rk2-heun", _p(), lr=0.1, tableau=(0.5, 0.5, 1.0))
    with pytest.raises(LossurfError, match=r"a1 \+ a2 = 0\.8"):
        build("adam+rk2", _p(), lr=0.1, tableau=(0.4, 0.4, 1.0))
    with pytest.raises(LossurfError, match=r"q1 = -0\.5"):
        build("rk2", _p(), lr=0.1, tableau=(0.5, 0.5, -0.5))
    with pytest.raises(LossurfError, match=r"minibatch mode 'odd'"):
        build("rk2-heun", _p(), lr=0.1, minibatch="odd")


def test_torch_value_errors_become_lossurf_errors():
    match = r"invalid options for optimizer 'adam'.*beta parameter at index 0: 1.5"
    with pytest.raises(LossurfError, match=match):
        build("adam", _p(), lr=0.1, betas=(1.5, 0.999))
    with pytest.raises(LossurfError, match=r"invalid options for optimizer 'sgdm'.*momentum"):
        build("sgdm", _p(), lr=0.1, momentum=-1.0)
