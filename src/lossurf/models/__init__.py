"""Model registry: the paper's networks (NIN, VGG, LSTM) and small digits-sized variants.

``build(spec, seed)`` turns a :class:`~lossurf.config.ModelSpec` into an ``nn.Module``. With a
seed, the module is created under a forked, seeded global RNG: the caller's RNG state is left
untouched and the same seed gives bitwise-identical weights. Options are checked against the
factory's keyword arguments (names and types) before anything is built.

Every model is a plain ``nn.Module`` with standard ``nn.BatchNorm1d/2d`` layers and named,
stable state-dict keys; forwards avoid in-place ops and ``.view`` so they work under
``torch.func.functional_call``, ``torch.compile`` and ``channels_last``.

A user's own model: a name containing ``:`` is an import path ``package.module:callable``
(see :mod:`lossurf.imports`). The callable gets the spec's options as keyword arguments, plus
each option the data decides (:data:`DATA_OPTIONS`: ``num_classes``, ``in_channels``,
``in_features``, ``vocab_size``) that its signature names explicitly (a ``**kwargs`` catch-all
does not receive them); it must return an ``nn.Module``. It is built under the same seeding as
a registered model, and the spec's ``init`` scheme is applied to it the same way.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any, Callable, Mapping, Union

import torch
from pydantic import ValidationError
from torch import nn

from lossurf.config import ModelSpec
from lossurf.errors import LossurfError
from lossurf.imports import is_import_path, resolve_callable
from lossurf.models.init import INIT_SCHEMES, apply_init
from lossurf.models.lstm import LSTMLM
from lossurf.models.nin import NIN
from lossurf.models.small import MLP, CNNSmall, NINSmall, VGGSmall
from lossurf.models.vgg import VGG

__all__ = [
    "MODELS",
    "DATA_OPTIONS",
    "INIT_SCHEMES",
    "names",
    "options",
    "resolve_options",
    "build",
    "apply_init",
    "NIN",
    "VGG",
    "LSTMLM",
    "NINSmall",
    "VGGSmall",
    "CNNSmall",
    "MLP",
]

#: Registered models: ``name -> factory(**options) -> nn.Module`` (keyword-only options).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "nin": NIN,
    "vgg": VGG,
    "lstm": LSTMLM,
    "nin-small": NINSmall,
    "vgg-small": VGGSmall,
    "cnn-small": CNNSmall,
    "mlp": MLP,
}

#: Options a data set decides (``Dataset.model_options()``), as opposed to user choices.
DATA_OPTIONS = ("num_classes", "in_channels", "in_features", "vocab_size")


def names() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(MODELS)


def _factory(name: str) -> Callable[..., nn.Module]:
    if is_import_path(name):
        return resolve_callable(name, "model factory")
    factory = MODELS.get(name)
    if factory is None:
        raise LossurfError(
            f"unknown model {name!r}; use one of: {', '.join(names())} "
            "(or your own factory as 'package.module:callable')"
        )
    return factory


def _parameters(factory: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    return {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def options(name: str) -> dict[str, Any]:
    """The options of model ``name`` with their defaults, e.g. for ``lossurf models``."""
    return {k: p.default for k, p in _parameters(_factory(name)).items()}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits the type hint ``annotation`` (the hints our factories use)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:  # bool is an int subclass, but `layers: true` is a mistake
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # YAML reads `width: 1` as an int; accept it
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        return not args or all(_matches(v, args[0]) for v in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # a hint we do not model: let the factory judge


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin in (list, tuple, Sequence):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if annotation is None or annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _check_options(name: str, factory: Callable[..., nn.Module], opts: Mapping[str, Any]) -> None:
    params = _parameters(factory)
    valid = ", ".join(sorted(params))
    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except Exception:  # a user's hints that do not evaluate (forward references): skip types
        hints = {}
    catch_all = _takes_kwargs(factory)
    for key, value in opts.items():
        if key not in params and not catch_all:
            raise LossurfError(
                f"model {name!r} has no option {key!r}; valid options: {valid}"
            )
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            raise LossurfError(
                f"model {name!r}: option {key!r} must be {_type_name(hint)}, got "
                f"{type(value).__name__} {value!r}; valid options: {valid}"
            )


def _takes_kwargs(factory: Callable[..., nn.Module]) -> bool:
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False


def _call_user_factory(name: str, factory: Callable[..., nn.Module], opts: Mapping[str, Any]) -> nn.Module:
    """Call a user's model factory; its failures become one-line user errors."""
    try:
        model = factory(**opts)
    except LossurfError:
        raise
    except Exception as error:
        raise LossurfError(
            f"model factory {name!r} raised {type(error).__name__}: {error}; "
            "fix the factory or its options (model: options:)"
        ) from None
    if not isinstance(model, nn.Module):
        raise LossurfError(
            f"model factory {name!r} returned a {type(model).__name__}, not a torch.nn.Module; "
            "return the network itself"
        )
    return model


def resolve_options(
    name: str, data_options: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Merge the user's options with what the data decides, for a spec that rebuilds alone.

    Data options (``Dataset.model_options()``) that model ``name`` does not take are dropped
    (an LSTM has no ``in_channels``, a CNN no ``in_features``); those it takes override the
    user's, since a model with the wrong number of classes or channels cannot run on the data.
    A user's factory takes a data option only if its signature names it (not via ``**kwargs``).

    Args:
        name: a registered model or an import path ``package.module:callable``.
        data_options: e.g. ``{"num_classes": 10, "in_channels": 1}``.
        options: the user's options (default none).

    Returns:
        The merged options, to store in the resolved ``ModelSpec``.

    Raises:
        LossurfError: ``name`` is not a registered model, or its import path does not resolve.
    """
    accepted = _parameters(_factory(name))
    merged = dict(options or {})
    merged.update({k: v for k, v in data_options.items() if k in accepted})
    return merged


def build(
    spec: ModelSpec | Mapping[str, Any],
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build the module that ``spec`` describes and apply its initialization scheme.

    Args:
        spec: a :class:`ModelSpec` or a mapping with its fields (``name``, ``options``,
            ``init``).
        seed: if given, build under ``torch.random.fork_rng()`` seeded with it: the global
            RNG is left as it was and the same seed gives bitwise-identical weights. If None,
            draw from the global RNG as plain PyTorch code does (default None).
        device: move the built module there (default None: stay on CPU). Weights are drawn
            on CPU first, so a seed gives the same weights on every device.

    Returns:
        The module, in training mode.

    Raises:
        LossurfError: unknown model, unknown or ill-typed option, or an invalid value; for an
            import path also a module that does not import, a missing or non-callable
            attribute, a factory that raises or returns something other than an ``nn.Module``.
    """
    if not isinstance(spec, ModelSpec):
        try:
            spec = ModelSpec.model_validate(dict(spec))
        except ValidationError as error:
            from lossurf.config import format_validation_error

            raise LossurfError(format_validation_error(error, "model spec", ModelSpec)) from None
        except (TypeError, ValueError):
            raise LossurfError(
                f"a model spec must be a mapping with 'name', 'options', 'init'; got {spec!r}"
            ) from None
    factory = _factory(spec.name)
    _check_options(spec.name, factory, spec.options)
    if is_import_path(spec.name):
        def make() -> nn.Module:
            return _call_user_factory(spec.name, factory, spec.options)
    else:
        def make() -> nn.Module:
            return factory(**spec.options)
    if seed is None:
        model = apply_init(make(), spec.init, None)
    else:
        # devices=[]: fork only the CPU RNG; weights are drawn on CPU whatever `device` is.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = apply_init(make(), spec.init, None)
    return model.to(device) if device is not None else model
