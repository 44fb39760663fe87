"""RungeKutta: checked against closed-form gradient flow, plain torch optimizers and by hand."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from lossurf.errors import LossurfError
from lossurf.optim import TABLEAUS, RungeKutta, Tableau, build, resolve_tableau

DT = torch.float64



def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(DT)


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=g, dtype=DT)
    return x, torch.stack([x[:, 0] * x[:, 1], torch.sin(x[:, 2])], 1)


def _closure(model: nn.Module, opt: torch.optim.Optimizer, x, y):
    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return closure


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# --- Tableaus -------------------------------------------------------------------------------


def test_table3_coefficients_and_order():
    assert TABLEAUS["midpoint"].as_tuple() == (0.0, 1.0, 0.5)
    assert TABLEAUS["heun"].as_tuple() == (0.5, 0.5, 1.0)
    assert TABLEAUS["ralston"].as_tuple() == (1 / 3, 2 / 3, 0.75)
    assert TABLEAUS["euler"].as_tuple() == (1.0, 0.0, 0.0)
    assert [TABLEAUS[n].order for n in ("euler", "midpoint", "heun", "ralston")] == [1, 2, 2, 2]
    assert TABLEAUS["euler"].stages == 1 and TABLEAUS["heun"].stages == 2
    assert resolve_tableau((0.25, 0.75, 2 / 3)).order == 2
    assert resolve_tableau([0.5, 0.5, 0.5]).order == 1


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ((0.5, 0.6, 1.0), r"a1 \+ a2 = 1\.1.*a1 \+ a2 == 1"),
        ((0.5, 0.5, -1.0), r"q1 = -1\.0.*q1 must be >= 0"),
        ("rk4", r"unknown Runge-Kutta tableau 'rk4'.*euler, heun, midpoint, ralston"),
        ((0.5, 0.5), r"neither a name nor three numbers"),
        ((0.5, "x", 1.0), r"a2='x' is not a number"),
        ((0.5, 0.5, float("nan")), r"q1=nan is not finite"),
    ],
)
def test_bad_tableau(spec, match):
    with pytest.raises(LossurfError, match=match):
        resolve_tableau(spec)


# --- Second-order convergence on the gradient flow of a quadratic ----------------------------


def _flow_error(name: str, h: float, tableau=None) -> float:
    """|theta_N - expm(-A T) theta0| after integrating theta' = -A theta to T with step h."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DT))
    a = q @ torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=DT)) @ q.T  # dense SPD
    theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    t_end = 2.0
    evals, evecs = torch.linalg.eigh(a)
    exact = evecs @ torch.diag(torch.exp(-evals * t_end)) @ evecs.T @ theta0

    theta = nn.Parameter(theta0.clone())
    opt = build(name, [theta], lr=h, **({"tableau": tableau} if tableau else {}))

    def closure():
        opt.zero_grad()
        loss = 0.5 * theta @ a @ theta
        loss.backward()
        return loss

    for _ in range(round(t_end / h)):
        opt.step(closure)
    return float((theta.detach() - exact).norm())


@pytest.mark.parametrize("name", ["rk2-midpoint", "rk2-heun", "rk2-ralston", "sgd+rk2-heun"])
def test_rk2_is_second_order(name):
    ratio = _flow_error(name, 0.05) / _flow_error(name, 0.025)
    assert 3.5 <= ratio <= 4.5, ratio


@pytest.mark.parametrize("name", ["sgd", "rk2-euler"])
def test_euler_is_first_order(name):
    ratio = _flow_error(name, 0.05) / _flow_error(name, 0.025)
    assert 1.8 <= ratio <= 2.2, ratio


def test_numeric_tableau_order_follows_a2_q1():
    def ratio(tableau):
        return _flow_error("rk2", 0.05, tableau) / _flow_error("rk2", 0.025, tableau)

    second, first = ratio((0.25, 0.75, 2 / 3)), ratio((0.5, 0.5, 0.5))
    assert 3.5 <= second <= 4.5 and 1.8 <= first <= 2.2, (second, first)


# --- Equivalence with plain torch optimizers ------------------------------------------------


@pytest.mark.parametrize(
    ("rk_name", "plain", "kwargs"),
    [
        ("rk2-euler", torch.optim.SGD, {}),
        ("adam+rk2-euler", torch.optim.Adam, {}),
        ("sgdm+rk2-euler", torch.optim.SGD, {"momentum": 0.9}),
    ],
)
def test_euler_tableau_reproduces_base_bitwise(rk_name, plain, kwargs):
    x, y = _data()
    m_rk, m_ref = _mlp(), _mlp()
    opt_rk = build(rk_name, m_rk.parameters(), lr=0.05)
    opt_ref = plain(m_ref.parameters(), lr=0.05, **kwargs)
    assert opt_rk.evaluations_per_step == 1
    for _ in range(15):
        l_rk = opt_rk.step(_closure(m_rk, opt_rk, x, y))
        l_ref = opt_ref.step(_closure(m_ref, opt_ref, x, y))
        assert torch.equal(l_rk, l_ref)
        assert torch.equal(_flat(m_rk), _flat(m_ref))


@pytest.mark.parametrize("tableau", ["heun", "ralston", "midpoint"])
def test_adam_rk2_equals_adam_fed_combined_gradient(tableau):
    x, y = _data()
    model, ref = _mlp(), _mlp()
    lr = 0.02
    opt = build(f"adam+rk2-{tableau}", model.parameters(), lr=lr)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=lr)
    a1, a2, q1 = TABLEAUS[tableau].as_tuple()
    params = list(ref.parameters())

    def grad_at(values):
        # Independent reference: a functional call at explicit weights, torch.autograd.grad.
        names = [n for n, _ in ref.named_parameters()]
        w = [v.detach().clone().requires_grad_(True) for v in values]
        out = torch.func.functional_call(ref, dict(zip(names, w)), (x,))
        return torch.autograd.grad(((out - y) ** 2).mean(), w)

    for _ in range(6):
        opt.step(_closure(model, opt, x, y))
        theta = [p.detach().clone() for p in params]
        k1 = grad_at(theta)
        k2 = grad_at([t - q1 * lr * g for t, g in zip(theta, k1)])
        for p, g1, g2 in zip(params, k1, k2):
            p.grad = a1 * g1 + a2 * g2
        ref_opt.step()
        torch.testing.assert_close(_flat(model), _flat(ref), rtol=0, atol=1e-12)


class _Recorder(torch.optim.Optimizer):
    """A base optimizer stub that records theta and the gradient it is handed."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.1})
        self.seen: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

    def step(self, closure=None):
        ps = [p for g in self.param_groups for p in g["params"]]
        self.seen.append(([p.detach().clone() for p in ps], [p.grad.clone() for p in ps]))


@pytest.mark.parametrize("tableau", ["heun", "ralston", "midpoint"])
def test_theta_restored_exactly_before_base_step(tableau):
    x, y = _data()
    model = _mlp()
    # Awkward values: moving by q1*h*k1 and back by subtraction would not round-trip.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 / 3).add_(1e-17)
    start = [p.detach().clone() for p in model.parameters()]
    rec = _Recorder(model.parameters())
    opt = RungeKutta(rec, tableau)
    grads = []

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        return loss

    opt.step(closure)
    theta_seen, grad_seen = rec.seen[0]
    for before, seen, now in zip(start, theta_seen, model.parameters()):
        assert torch.equal(before, seen) and torch.equal(before, now)
    a1, a2, _ = TABLEAUS[tableau].as_tuple()
    for g1, g2, seen in zip(grads[0], grads[1], grad_seen):
        # The fused axpy may round differently from this two-product formula: 1 ulp.
        torch.testing.assert_close(seen, a2 * g2 + a1 * g1, rtol=1e-15, atol=0)
    assert not torch.equal(grads[0][0], grads[1][0])  # stage 2 really was elsewhere


def test_closure_failure_in_stage_two_restores_theta():
    model = _mlp()
    x, y = _data()
    opt = build("rk2-heun", model.parameters(), lr=0.5)
    start = _flat(model).clone()

    def closure():
        if opt.stage == 2:
            raise RuntimeError("boom")
        return _closure(model, opt, x, y)()

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    assert torch.equal(_flat(model), start) and opt.stage == 0


# --- State, protocol, schedulers, missing gradients -----------------------------------------


def test_state_dict_round_trip_in_lockstep():
    x, y = _data()
    model = _mlp()
    opt = build("adam+rk2-ralston", model.parameters(), lr=0.01)
    for _ in range(5):
        opt.step(_closure(model, opt, x, y))
    clone = copy.deepcopy(model)
    fresh = build("adam+rk2-ralston", clone.parameters(), lr=0.01)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.param_groups is fresh.base.param_groups
    for _ in range(5):
        opt.step(_closure(model, opt, x, y))
        fresh.step(_closure(clone, fresh, x, y))
        assert torch.equal(_flat(model), _flat(clone))
    for p, q in zip(model.parameters(), clone.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], fresh.state[q][key])
    meta = {"tableau": [1 / 3, 2 / 3, 0.75], "name": "ralston", "minibatch": "same"}
    assert fresh.state_dict()["runge_kutta"] == meta


def test_load_state_from_other_tableau_or_plain_optimizer_fails():
    model = _mlp()
    heun = build("adam+rk2-heun", model.parameters(), lr=0.01)
    ralston = build("adam+rk2-ralston", model.parameters(), lr=0.01)
    match = r"saved by RungeKutta\(tableau=heun.*build the optimizer with the saved"
    with pytest.raises(LossurfError, match=match):
        ralston.load_state_dict(heun.state_dict())
    with pytest.raises(LossurfError, match=r"not a RungeKutta optimizer state"):
        heun.load_state_dict(torch.optim.Adam(model.parameters()).state_dict())


def test_next_minibatch_protocol():
    x, y = _data()
    model = _mlp()
    opt = build("rk2-heun", model.parameters(), lr=0.05, minibatch="next")
    assert opt.minibatch == "next" and opt.evaluations_per_step == 2
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    calls = []

    def closure():
        xb, yb = batches[opt.stage - 1]  # the engine's way: stage 2 takes the next batch
        calls.append(opt.stage)
        opt.zero_grad()
        loss = ((model(xb) - yb) ** 2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [1, 2] and opt.stage == 0
    expected = ((_mlp()(x[:16]) - y[:16]) ** 2).mean()
    assert torch.equal(loss, expected)  # the returned loss is stage 1's
    assert build("rk2-heun", model.parameters(), lr=0.05).minibatch == "same"


def test_scheduler_and_lr_writes_reach_the_base():
    model = _mlp()
    opt = build("sgdm+rk2-heun", model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = _data()
    opt.step(_closure(model, opt, x, y))
    sched.step()
    assert opt.base.param_groups[0]["lr"] == 0.05
    opt.param_groups[0]["lr"] = 0.01  # the engine's write
    assert opt.base.param_groups[0]["lr"] == 0.01
    assert opt.state is opt.base.state and opt.defaults is opt.base.defaults


def test_rk2_step_uses_group_lr_as_h():
    """Two groups with different lr: stage 2 must move each group by q1*lr_group*k1."""
    a = nn.Parameter(torch.tensor([1.0], dtype=DT))
    b = nn.Parameter(torch.tensor([1.0], dtype=DT))
    opt = build("rk2-heun", [{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.3}], lr=0.2)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (a**2).sum() + 0.5 * (b**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # Heun on theta' = -theta: theta <- theta (1 - h + h^2/2).
    for p, h in ((a, 0.1), (b, 0.3)):
        assert abs(p.item() - (1 - h + h * h / 2)) < 1e-15


def test_params_without_gradient():
    frozen = nn.Parameter(torch.ones(2, dtype=DT))  # never used: no grad in any stage
    stage1_only = nn.Parameter(torch.ones(2, dtype=DT))  # grad in stage 1 only
    w = nn.Parameter(torch.tensor([2.0, -1.0], dtype=DT))
    opt = build("adam+rk2-heun", [w, frozen, stage1_only], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        if opt.stage == 1:
            loss = loss + (3 * stage1_only).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.equal(frozen, torch.ones(2, dtype=DT)) and frozen not in opt.state
    # stage1_only: combined direction a1*3 = 1.5 > 0, so Adam's first step moves it by -lr.
    torch.testing.assert_close(stage1_only.detach(), torch.full((2,), 0.9, dtype=DT))
    torch.testing.assert_close(stage1_only.grad, torch.full((2,), 1.5, dtype=DT))


def test_step_without_closure_fails():
    model = _mlp()
    opt = build("rk2-heun", model.parameters(), lr=0.1)
    with pytest.raises(LossurfError, match=r"needs a closure.*optimizer.step\(closure\)"):
        opt.step()


def test_constructor_errors():
    base = torch.optim.SGD(_mlp().parameters(), lr=0.1)
    with pytest.raises(LossurfError, match=r"minibatch mode 'later'.*same, next"):
        RungeKutta(base, "heun", minibatch="later")  # type: ignore[arg-type]
    with pytest.raises(LossurfError, match=r"cannot wrap another RungeKutta"):
        RungeKutta(RungeKutta(base))
    with pytest.raises(LossurfError, match=r"unknown Runge-Kutta tableau 'rk3'"):
        RungeKutta(base, "rk3")
    assert RungeKutta(base, Tableau(0.0, 1.0, 0.5)).tableau.as_tuple() == (0.0, 1.0, 0.5)


def test_deepcopy_keeps_sharing():
    opt = build("adam+rk2-heun", _mlp().parameters(), lr=0.1)
    twin = copy.deepcopy(opt)
    assert twin.param_groups is twin.base.param_groups and twin.tableau == opt.tableau


# --- Stage 2 is a look-ahead: batch-norm statistics and dropout ---------------------------


class _MaskRecorder(nn.Module):
    """Dropout that records every mask it draws (1 kept, 0 dropped)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.masks = p, []

    def forward(self, x):
        if not self.training:
            return x
        mask = torch.empty_like(x).bernoulli_(1 - self.p)  # what nn.Dropout draws
        self.masks.append(mask.to(torch.int8))
        return x * mask / (1 - self.p)


def _bn_net(seed: int = 0, p: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), _MaskRecorder(p),
                         nn.Linear(8, 2)).to(DT)


@pytest.mark.parametrize("name", ["rk2-heun", "rk2-midpoint", "adam+rk2-ralston"])
def test_rk_step_updates_bn_running_stats_once_at_theta(name):
    x, y = _data()
    model, ref = _bn_net(), _bn_net()
    opt = build(name, model.parameters(), lr=0.1)
    bn, bn_ref = model[1], ref[1]
    for step in range(1, 4):
        theta = copy.deepcopy(model.state_dict())
        ref.load_state_dict(theta)
        ref.train()
        with torch.no_grad():
            ref(x)  # one plain forward at theta: the running statistics a step should leave
        opt.step(_closure(model, opt, x, y))
        assert int(bn.num_batches_tracked) == step  # +1 per step, not +2
        assert torch.equal(bn.running_mean, bn_ref.running_mean)
        assert torch.equal(bn.running_var, bn_ref.running_var)
    # The look-ahead really moved the weights, so stage 2 would have changed the statistics.
    assert not torch.equal(_flat(model), _flat(_bn_net()))


def test_rk_step_cumulative_bn_average_counts_one_batch_per_step():
    # momentum=None: the running mean is the average over num_batches_tracked batches, so a
    # second (look-ahead) batch would change its weights too.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None), nn.Linear(4, 2)).to(DT)
    x, y = _data()
    opt = build("rk2-heun", model.parameters(), lr=0.1)
    means = []
    for _ in range(2):
        with torch.no_grad():
            means.append(model[0](x).mean(0))  # the batch mean at theta, before the step
        opt.step(_closure(model, opt, x, y))
    assert int(model[1].num_batches_tracked) == 2
    torch.testing.assert_close(model[1].running_mean, (means[0] + means[1]) / 2)


@pytest.mark.parametrize("minibatch", ["same", "next"])
def test_rk_stage_two_sees_stage_one_dropout_mask(minibatch):
    x, y = _data()
    model = _bn_net(p=0.5)
    recorder = model[3]
    opt = build("rk2-heun", model.parameters(), lr=0.1, minibatch=minibatch)
    torch.manual_seed(123)
    steps = []
    for _ in range(3):
        recorder.masks.clear()
        opt.step(_closure(model, opt, x, y))
        stage1, stage2 = recorder.masks
        assert torch.equal(stage1, stage2)
        assert 0 < int(stage1.sum()) < stage1.numel()  # a real mask, not all kept
        steps.append(stage1)
    after_steps = torch.rand(4)
    # Reference: three plain forwards from the same seed draw the same three masks, and the
    # random stream after them is the stream after the three RK steps (stage 2 consumed none).
    torch.manual_seed(123)
    check = _bn_net(p=0.5)
    torch.manual_seed(123)
    for k in range(3):
        check(x)
        assert torch.equal(check[3].masks[k], steps[k])
    assert not torch.equal(steps[0], steps[1])
    assert torch.equal(torch.rand(4), after_steps)
