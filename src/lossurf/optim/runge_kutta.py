"""Second-order Runge-Kutta augmentation of any torch optimizer (paper A.3, eqs. 18-24).

Gradient descent is explicit Euler on the field ``X = -grad U``. An explicit two-stage
Runge-Kutta step with tableau ``(a1, a2, q1)`` and step ``h`` (the learning rate) is

    k1 = grad U(theta),  k2 = grad U(theta - q1 h k1),  theta <- theta - h (a1 k1 + a2 k2),

so the RK2 "gradient" is ``a1 k1 + a2 k2`` (eq. 24). :class:`RungeKutta` computes it and hands
it to the wrapped optimizer in place of the gradient: SGD becomes RK2 proper, Adam sees the
combined vector in its moments ("Adam+RK2").

The second stage is a look-ahead, not a training step of its own: batch-norm running
statistics are left as the first stage (a forward at ``theta``) made them, and dropout draws
the same mask in both stages (see :meth:`RungeKutta.step`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim import Optimizer

from lossurf.errors import LossurfError

__all__ = ["Tableau", "TABLEAUS", "MINIBATCH_MODES", "resolve_tableau", "RungeKutta"]

_RUNNING_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

MINIBATCH_MODES = ("same", "next")
_CONSISTENCY_TOL = 1e-12


@dataclass(frozen=True)
class Tableau:
    """Coefficients of an explicit two-stage Runge-Kutta method (paper Table 3).

    Attributes:
        a1: Weight of the first stage ``k1``.
        a2: Weight of the second stage ``k2``; 0 makes a one-stage (Euler) method.
        q1: Where the second stage is evaluated: ``theta - q1 * h * k1``.
        name: Label used in messages and state dicts ("custom" for numeric tableaus).
    """

    a1: float
    a2: float
    q1: float
    name: str = "custom"

    def __post_init__(self) -> None:
        for field in ("a1", "a2", "q1"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LossurfError(
                    f"Runge-Kutta tableau coefficient {field}={value!r} is not a number; "
                    "give tableau=(a1, a2, q1) as three numbers"
                )
            if not math.isfinite(value):
                raise LossurfError(
                    f"Runge-Kutta tableau coefficient {field}={value!r} is not finite; "
                    "give finite numbers"
                )
            object.__setattr__(self, field, float(value))
        if abs(self.a1 + self.a2 - 1.0) > _CONSISTENCY_TOL:
            raise LossurfError(
                f"Runge-Kutta tableau {self.name!r} has a1 + a2 = {self.a1 + self.a2!r}; "
                "a consistent method needs a1 + a2 == 1 (e.g. heun: a1=1/2, a2=1/2, q1=1)"
            )
        if self.q1 < 0:
            raise LossurfError(
                f"Runge-Kutta tableau {self.name!r} has q1 = {self.q1!r}; q1 must be >= 0 "
                "(the second stage is evaluated at theta - q1*h*k1)"
            )

    @property
    def stages(self) -> int:
        """Gradient evaluations per step: 1 when ``a2 == 0`` (Euler), else 2."""
        return 1 if self.a2 == 0.0 else 2

    @property
    def order(self) -> int:
        """Order of accuracy: 2 when ``a2 * q1 == 1/2`` (Hairer et al. 1987), else 1."""
        return 2 if abs(self.a2 * self.q1 - 0.5) <= _CONSISTENCY_TOL else 1

    def as_tuple(self) -> tuple[float, float, float]:
        """The coefficients ``(a1, a2, q1)``."""
        return (self.a1, self.a2, self.q1)


TABLEAUS: dict[str, Tableau] = {
    "euler": Tableau(1.0, 0.0, 0.0, "euler"),
    "midpoint": Tableau(0.0, 1.0, 0.5, "midpoint"),
    "heun": Tableau(0.5, 0.5, 1.0, "heun"),
    "ralston": Tableau(1.0 / 3.0, 2.0 / 3.0, 0.75, "ralston"),
}


def resolve_tableau(spec: str | Tableau | Sequence[float]) -> Tableau:
    """Turn a tableau name, a :class:`Tableau` or ``(a1, a2, q1)`` into a validated Tableau.

    Args:
        spec: One of ``TABLEAUS`` (``euler``, ``midpoint``, ``heun``, ``ralston``), a
            ``Tableau``, or a sequence of three numbers ``(a1, a2, q1)``.

    Returns:
        The tableau.

    Raises:
        LossurfError: Unknown name, wrong length, or an inconsistent tableau.
    """
    if isinstance(spec, Tableau):
        return spec
    if isinstance(spec, str):
        try:
            return TABLEAUS[spec.strip().lower()]
        except KeyError:
            raise LossurfError(
                f"unknown Runge-Kutta tableau {spec!r}; valid tableaus: "
                f"{', '.join(sorted(TABLEAUS))}, or tableau=(a1, a2, q1) as numbers"
            ) from None
    if isinstance(spec, Sequence) and len(spec) == 3:
        return Tableau(*spec)
    raise LossurfError(
        f"Runge-Kutta tableau {spec!r} is neither a name nor three numbers; give one of "
        f"{', '.join(sorted(TABLEAUS))} or tableau=(a1, a2, q1)"
    )


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The global CPU generator's state and, once CUDA is in use, every device's."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class _FrozenRunningStats:
    """While active, every batch-norm-like module (``_NormBase``: BatchNorm*, SyncBatchNorm,
    InstanceNorm* with running statistics) that runs a training-mode forward gets its running
    buffers back on exit, exactly as they were before its first forward.

    A process-wide forward pre-hook, so it works for any model without the optimizer knowing
    the modules; it is registered only for the duration of stage 2.
    """

    def __init__(self) -> None:
        self._saved: dict[int, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
        self._handle: Any = None

    def _pre_hook(self, module: nn.Module, _inputs: Any) -> None:
        if (isinstance(module, _NormBase) and module.training and module.track_running_stats
                and id(module) not in self._saved):
            buffers = {}
            for name in _RUNNING_BUFFERS:
                value = getattr(module, name, None)
                if isinstance(value, torch.Tensor) and not isinstance(
                        value, nn.parameter.UninitializedBuffer):
                    buffers[name] = value.detach().clone()
            self._saved[id(module)] = (module, buffers)

    def __enter__(self) -> "_FrozenRunningStats":
        self._handle = register_module_forward_pre_hook(self._pre_hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
        with torch.no_grad():
            for module, buffers in self._saved.values():
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)
        self._saved.clear()


class RungeKutta(Optimizer):
    """Runge-Kutta augmentation of a base optimizer (paper A.3.1).

    Shares the base's ``param_groups``, ``state`` and ``defaults`` (so LR schedulers and code
    that reads or writes ``group["lr"]`` act on the base), and nests the base's state dict in
    its own. ``step`` requires a closure that zeroes the gradients, computes the loss, calls
    ``backward()`` and returns the loss; it is called once per stage.

    Args:
        base: The optimizer that steps with ``a1*k1 + a2*k2`` in place of the gradient.
        tableau: A name in ``TABLEAUS``, a :class:`Tableau` or ``(a1, a2, q1)``
            (default ``"heun"``).
        minibatch: Read by the training engine. ``"same"``: both stages see the same
            minibatch. ``"next"``: stage 2 sees the next minibatch, so an epoch costs as many
            gradient evaluations as the base method (paper Fig. 9) (default ``"same"``).

    Stage 2 is a look-ahead: it leaves batch-norm running statistics as stage 1 left them and
    draws stage 1's dropout mask (details in :meth:`step`).

    Attributes:
        stage: 1 or 2 while the closure of that stage runs, 0 otherwise; lets a closure tell
            the stages apart.

    References:
        Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces", A.3;
        Hairer, Norsett & Wanner (1987), Table 3 coefficients.
    """

    def __init__(
        self,
        base: Optimizer,
        tableau: str | Tableau | Sequence[float] = "heun",
        minibatch: Literal["same", "next"] = "same",
    ) -> None:
        if not isinstance(base, Optimizer):
            raise TypeError(f"RungeKutta wraps a torch.optim.Optimizer, got {type(base).__name__}")
        if isinstance(base, RungeKutta):
            raise LossurfError(
                "RungeKutta cannot wrap another RungeKutta; wrap the base optimizer once"
            )
        if minibatch not in MINIBATCH_MODES:
            raise LossurfError(
                f"unknown Runge-Kutta minibatch mode {minibatch!r}; valid modes: "
                f"{', '.join(MINIBATCH_MODES)}"
            )
        # Optimizer.__init__ would copy the groups; set up only what the base class needs
        # (hooks and the profiled step) and delegate groups/state/defaults to ``base``.
        self.base = base
        self.tableau = resolve_tableau(tableau)
        self.minibatch: Literal["same", "next"] = minibatch
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self._saved: dict[torch.Tensor, torch.Tensor] = {}  # scratch copies of theta, reused
        self.stage = 0

    # Properties, not attributes: base.load_state_dict replaces base.param_groups by a new list.
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The base optimizer's parameter groups (shared, not copied)."""
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The base optimizer's per-parameter state (RK keeps none of its own)."""
        return self.base.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's defaults (used by ``add_param_group``)."""
        return self.base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base.defaults = value

    @property
    def evaluations_per_step(self) -> int:
        """Closure calls (gradient evaluations) per step: 1 for Euler, else 2."""
        return self.tableau.stages

    def __getstate__(self) -> dict[str, Any]:
        return {"base": self.base, "tableau": self.tableau, "minibatch": self.minibatch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.base = state["base"]
        self.tableau = state["tableau"]
        self.minibatch = state["minibatch"]
        self._init_runtime()

    def __repr__(self) -> str:
        t = self.tableau
        return (
            f"RungeKutta(tableau={t.name} (a1={t.a1:g}, a2={t.a2:g}, q1={t.q1:g}), "
            f"minibatch={self.minibatch!r}, base={self.base!r})"
        )

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base's state dict nested under ``"base"``, plus the tableau and minibatch mode."""
        return {
            "base": self.base.state_dict(),
            "runge_kutta": {
                "tableau": list(self.tableau.as_tuple()),
                "name": self.tableau.name,
                "minibatch": self.minibatch,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load a state dict written by :meth:`state_dict` of an identically built RungeKutta.

        Raises:
            LossurfError: The state dict is not a RungeKutta one, or was saved with another
                tableau or minibatch mode.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"base", "runge_kutta"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise LossurfError(
                f"not a RungeKutta optimizer state (keys {keys}); load it into the optimizer "
                "that saved it, or build a '<base>+rk2-<tableau>' optimizer to match"
            )
        meta = state_dict["runge_kutta"]
        saved = tuple(float(x) for x in meta["tableau"])
        if saved != self.tableau.as_tuple() or meta["minibatch"] != self.minibatch:
            raise LossurfError(
                f"optimizer state was saved by RungeKutta(tableau={meta['name']} {saved}, "
                f"minibatch={meta['minibatch']!r}) but this one is "
                f"RungeKutta(tableau={self.tableau.name} {self.tableau.as_tuple()}, "
                f"minibatch={self.minibatch!r}); build the optimizer with the saved settings"
            )
        self.base.load_state_dict(state_dict["base"])

    def _scratch(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for p in params:
            buf = self._saved.get(p)
            if buf is None or (buf.shape, buf.dtype, buf.device) != (p.shape, p.dtype, p.device):
                buf = self._saved[p] = torch.empty_like(p, memory_format=torch.preserve_format)
            out.append(buf)
        return out

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Runge-Kutta step; returns the loss of stage 1.

        The stage-2 point follows the raw gradient only: a base's weight decay enters the
        combined direction when the base steps, not the stage-2 point.

        A parameter takes part when it has a gradient in either stage; a stage that gives it
        no gradient counts as zero. Parameters with no gradient in both stages are left to the
        base optimizer, which skips them.

        Stage 2 only looks ahead, so it leaves no trace on the model's statistics: the running
        buffers of every batch-norm module (``running_mean``, ``running_var``,
        ``num_batches_tracked``) that stage 2's forward touches are restored to their values
        after stage 1, so a step advances them once, as one forward at ``theta`` does. And
        stage 2 sees the same dropout mask as stage 1 -- our choice, so that ``k1`` and ``k2``
        are gradients of one and the same (sub)network, as in the deterministic method: the
        global random generators (CPU and, once initialised, every CUDA device) are set back
        to their state before stage 1 when stage 2 starts, and after stage 2 to their state
        after stage 1, so the random stream after a step does not depend on stage 2.

        Args:
            closure: Zeroes the gradients, evaluates the loss, calls ``backward()`` and returns
                the loss. Required: a step evaluates the gradient at two points.

        Raises:
            LossurfError: No closure was given.
        """
        if closure is None:
            raise LossurfError(
                "RungeKutta.step needs a closure (it evaluates the gradient twice per step); "
                "call optimizer.step(closure) with a closure that zeroes the gradients, "
                "computes the loss, calls backward() and returns the loss"
            )
        a1, a2, q1 = self.tableau.as_tuple()
        try:
            self.stage = 1
            rng_before = _rng_state() if a2 != 0.0 else None
            with torch.enable_grad():
                loss = closure()
            if a2 == 0.0:  # one-stage method: the base method itself (scaled if a1 != 1)
                if a1 != 1.0:
                    with torch.no_grad():
                        grads = [p.grad for g in self.param_groups for p in g["params"]
                                 if p.grad is not None]
                        torch._foreach_mul_(grads, a1)
                self.base.step()
                return loss

            # Stage 2 point: theta - q1*h*k1 with h the group's lr; theta kept in scratch.
            moved: list[torch.Tensor] = []
            k1: dict[torch.Tensor, torch.Tensor] = {}
            with torch.no_grad():
                for group in self.param_groups:
                    params = [p for p in group["params"] if p.grad is not None]
                    if not params:
                        continue
                    grads = [p.grad for p in params]
                    saved = self._scratch(params)
                    torch._foreach_copy_(saved, params)
                    if q1 != 0.0:
                        # The field is -grad (+grad for a base that maximizes).
                        sign = 1.0 if group.get("maximize", False) else -1.0
                        torch._foreach_add_(params, grads, alpha=sign * q1 * float(group["lr"]))
                    moved.extend(params)
                    for p, g in zip(params, grads):
                        k1[p] = g
                        # Keep k1's tensor and let backward allocate k2, so a closure that
                        # does not zero the gradients cannot add k2 onto k1.
                        p.grad = None

            self.stage = 2
            assert rng_before is not None
            rng_after = _rng_state()
            try:
                _set_rng_state(rng_before)  # the same dropout mask as stage 1
                with _FrozenRunningStats(), torch.enable_grad():
                    closure()
            finally:
                _set_rng_state(rng_after)
                # Exact restore (copy back, never subtract the move again), also when the
                # closure raised, so a failed step never leaves theta at the stage-2 point.
                if moved:
                    with torch.no_grad():
                        torch._foreach_copy_(moved, [self._saved[p] for p in moved])

            with torch.no_grad():
                both, only1, only2 = [], [], []
                for group in self.param_groups:
                    for p in group["params"]:
                        g1 = k1.get(p)
                        if p.grad is not None:
                            (both if g1 is not None else only2).append(p)
                        elif g1 is not None:
                            only1.append(p)
                if both:
                    k2 = [p.grad for p in both]
                    torch._foreach_mul_(k2, a2)
                    if a1 != 0.0:
                        torch._foreach_add_(k2, [k1[p] for p in both], alpha=a1)
                if only2:
                    torch._foreach_mul_([p.grad for p in only2], a2)
                if only1:
                    g1s = [k1[p] for p in only1]
                    torch._foreach_mul_(g1s, a1)
                    for p, g in zip(only1, g1s):
                        p.grad = g
            self.base.step()
            return loss
        finally:
            self.stage = 0
