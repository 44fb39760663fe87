"""Resolve ``"package.module:attribute"`` import paths to a user's own factories.

An experiment file names a user's model or data set by an import path, e.g.
``model: {name: "mypkg.models:resnet20"}``. The module is imported from ``sys.path`` as any
``import`` would: the package must be installed (``pip install -e .``) or its parent directory
on ``PYTHONPATH``. The console script does not add the current directory (``python -m``
would), so a run does not depend on where it was started.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from lossurf.errors import LossurfError

__all__ = ["is_import_path", "resolve_callable", "call_signature_filter"]


def is_import_path(name: str) -> bool:
    """Whether ``name`` is an import path (``module.path:attribute``) rather than a registry
    name; registry names never contain ``:``."""
    return ":" in name


def resolve_callable(path: str, what: str) -> Callable[..., Any]:
    """Import ``module.path:attr`` (``attr`` may be dotted, e.g. ``Class.create``).

    Args:
        path: the import path.
        what: what it names, for messages (``model factory``, ``data factory``).

    Returns:
        The callable.

    Raises:
        LossurfError: a malformed path, a module that does not import (its error named), a
            missing attribute, or an attribute that is not callable.
    """
    module_name, _, attr = path.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not module_name or not attr or ":" in attr:
        raise LossurfError(
            f"{what} {path!r} is not an import path of the form 'package.module:callable'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # The module itself (or one of its parents) is missing, or one of *its* imports is.
        own = error.name is not None and (module_name == error.name
                                          or module_name.startswith(error.name + "."))
        detail = f": {error}" if own else f" (while importing it: ModuleNotFoundError: {error})"
        raise LossurfError(
            f"cannot import module {module_name!r} for {what} {path!r}{detail}; "
            "is it on PYTHONPATH / installed?"
        ) from None
    except Exception as error:  # the user's module raised while importing: name the error
        raise LossurfError(
            f"cannot import module {module_name!r} for {what} {path!r}: "
            f"{type(error).__name__}: {error}; fix that module (is it on PYTHONPATH / installed?)"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise LossurfError(
                f"module {module_name!r} has no attribute {attr!r} ({what} {path!r}); "
                "check the name after ':'"
            )
        target = getattr(target, part)
    if not callable(target):
        raise LossurfError(
            f"{what} {path!r} is an object of type {type(target).__name__}, not a callable; "
            "name a function or class after ':'"
        )
    return target


def call_signature_filter(fn: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``offered`` that ``fn`` names as parameters (by keyword).

    Values the framework decides (``num_classes``, ``data_dir``, ...) are passed to a user's
    factory only where its signature names them explicitly; ``**kwargs`` does not receive them,
    so a factory forwarding ``**kwargs`` elsewhere never gets an argument it did not ask for.
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: offer nothing
        return {}
    named = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in offered.items() if k in named}
