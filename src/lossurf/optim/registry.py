"""Optimizer registry: the paper's base methods (A.2) and their Runge-Kutta forms (A.3).

Names: a base (``sgd``, ``sgdm``, ``rmsprop``, ``adadelta``, ``adam``, ``adagrad``);
``rk2-<tableau>`` (Runge-Kutta over SGD, the paper's "RK2"); ``<base>+rk2-<tableau>`` (e.g.
``adam+rk2-heun``, the paper's "ADAM&RK2"); and ``rk2`` / ``<base>+rk2`` with the option
``tableau=(a1, a2, q1)``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from lossurf.errors import LossurfError
from lossurf.optim.runge_kutta import TABLEAUS, RungeKutta, resolve_tableau

__all__ = ["OptimizerEntry", "OPTIMIZERS", "RK_OPTIONS", "names", "parse_name", "build"]

RK_OPTIONS = ("tableau", "minibatch")


@dataclass(frozen=True)
class OptimizerEntry:
    """A base method: a torch optimizer class with the paper's defaults.

    Attributes:
        cls: The ``torch.optim`` class.
        defaults: Options applied unless the user overrides them.
        fixed: Options the method pins (the user may not set them), with the reason.
        description: One line for listings.
    """

    cls: type[Optimizer]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    def options(self) -> list[str]:
        """Options the user may pass: the class's keyword arguments besides params and lr."""
        sig = inspect.signature(self.cls.__init__)
        skip = {"self", "params", "lr", *self.fixed}
        return [n for n in sig.parameters if n not in skip]


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry(
        torch.optim.SGD,
        "stochastic gradient descent, no momentum",
        fixed={"momentum": "plain SGD has no momentum; use 'sgdm' with momentum=..."},
    ),
    "sgdm": OptimizerEntry(torch.optim.SGD, "SGD with momentum (0.9)", defaults={"momentum": 0.9}),
    "rmsprop": OptimizerEntry(torch.optim.RMSprop, "RMSprop"),
    "adadelta": OptimizerEntry(torch.optim.Adadelta, "Adadelta"),
    "adam": OptimizerEntry(torch.optim.Adam, "Adam"),
    "adagrad": OptimizerEntry(torch.optim.Adagrad, "Adagrad"),
}


def names() -> list[str]:
    """Every registered name: the bases, then their Runge-Kutta forms.

    ``rk2`` and ``<base>+rk2`` need the option ``tableau=(a1, a2, q1)``.
    """
    tableaus = list(TABLEAUS)
    out = list(OPTIMIZERS)
    out += [f"rk2-{t}" for t in tableaus] + ["rk2"]
    for base in OPTIMIZERS:
        out += [f"{base}+rk2-{t}" for t in tableaus] + [f"{base}+rk2"]
    return out


def _valid_names_message() -> str:
    return (
        f"valid names: {', '.join(OPTIMIZERS)}; Runge-Kutta forms 'rk2-<tableau>' (over sgd) "
        f"or '<base>+rk2-<tableau>' with tableau in {', '.join(TABLEAUS)} (e.g. 'adam+rk2-heun'), "
        "or 'rk2' / '<base>+rk2' with option tableau=(a1, a2, q1)"
    )


def parse_name(name: str) -> tuple[str, str | None]:
    """Split an optimizer name into its base and its Runge-Kutta part.

    Args:
        name: A registered name (case and surrounding spaces ignored).

    Returns:
        ``(base, rk)`` where ``rk`` is None for a plain base, ``""`` for ``rk2`` with a
        numeric tableau option, else the tableau name.

    Raises:
        LossurfError: The name is not registered; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise LossurfError(
            f"optimizer name must be a string, got {name!r}; {_valid_names_message()}"
        )
    key = name.strip().lower()
    base, plus, rk = key.partition("+")
    if not plus:
        if key in OPTIMIZERS:
            return key, None
        base, rk = "sgd", key
        if not key.startswith("rk2"):
            base = ""
    if base in OPTIMIZERS and rk == "rk2":
        return base, ""
    if base in OPTIMIZERS and rk.startswith("rk2-") and rk[4:] in TABLEAUS:
        return base, rk[4:]
    raise LossurfError(f"unknown optimizer {name!r}; {_valid_names_message()}")


def _check_lr(name: str, lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise LossurfError(
            f"invalid learning rate lr={lr!r} for optimizer {name!r}; give a finite number > 0 "
            "(the paper's grids: 0.2-0.01 for SGD, 0.002-0.0001 for adaptive methods)"
        )
    return float(lr)


def build(name: str, params: Iterable[Any], lr: float, **options: Any) -> Optimizer:
    """Build a registered optimizer over ``params``.

    Args:
        name: A name from :func:`names`, e.g. ``"adam"``, ``"rk2-heun"``, ``"sgdm+rk2-ralston"``.
        params: Parameters or parameter-group dicts, as for any torch optimizer.
        lr: Learning rate; for Runge-Kutta forms also the step ``h`` of the stage-2 point.
        **options: ``tableau`` and ``minibatch`` go to :class:`RungeKutta` (RK forms only);
            the rest to the base torch optimizer (e.g. ``momentum``, ``betas``, ``eps``).

    Returns:
        A ``torch.optim.Optimizer``; a :class:`RungeKutta` for the RK forms.

    Raises:
        LossurfError: Unknown name or option, invalid lr, tableau or option value.
    """
    base, rk = parse_name(name)
    lr = _check_lr(name, lr)
    entry = OPTIMIZERS[base]
    rk_options = {k: options.pop(k) for k in RK_OPTIONS if k in options}
    if rk is None and rk_options:
        raise LossurfError(
            f"option(s) {', '.join(sorted(rk_options))} only apply to Runge-Kutta optimizers, "
            f"not {name!r}; use e.g. '{base}+rk2-heun' or drop them"
        )
    for key in options:
        if key in entry.fixed:
            raise LossurfError(f"option {key!r} is not allowed for {name!r}: {entry.fixed[key]}")
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        allowed = entry.options() + (list(RK_OPTIONS) if rk is not None else [])
        raise LossurfError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for optimizer {name!r}; "
            f"valid options: {', '.join(allowed)}"
        )
    if rk is not None:
        if rk == "" and "tableau" not in rk_options:
            raise LossurfError(
                f"optimizer {name!r} needs the option tableau=(a1, a2, q1) or a named form "
                f"like '{base}+rk2-heun'"
            )
        if rk and "tableau" in rk_options:
            raise LossurfError(
                f"optimizer {name!r} names its tableau already; drop the tableau option or "
                f"use '{base}+rk2' with tableau=(a1, a2, q1)"
            )
        # Validate the RK part before building the base so errors come first and cheaply.
        tableau = resolve_tableau(rk_options.get("tableau", rk))
    try:
        optimizer = entry.cls(params, lr=lr, **{**entry.defaults, **options})
    except (ValueError, TypeError) as error:
        if isinstance(error, LossurfError):
            raise
        raise LossurfError(
            f"invalid options for optimizer {name!r} ({options}): {error}; fix the value named"
        ) from error
    if rk is None:
        return optimizer
    return RungeKutta(optimizer, tableau, minibatch=rk_options.get("minibatch", "same"))
