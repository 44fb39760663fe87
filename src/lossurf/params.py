"""State-dict arithmetic: which tensors move, flat vectors, norms, affine combinations, hashes.

Every function here is pure: it reads state dicts (``Mapping[str, Tensor]``) or modules and
returns new tensors; no model or tensor passed in is ever modified.

"Moving" tensors are the ones a weight-space geometry moves along: a model's parameters
always, its floating-point buffers (batch-norm running statistics) only on request, and
integer buffers (``num_batches_tracked``) never. Norms, distances and the orthonormal plane
basis are computed over the moving keys in float64, so that geometry does not depend on the
storage precision of the checkpoints.

The evaluator combines more than it measures: every floating-point buffer that is not a BN
running statistic (a user's scale, mask or fixed projection) is combined with the same
coefficients as the parameters (:func:`lossurf.surface.runners.combined_keys`), but distances
stay over the parameters. Such a buffer is not a trained weight, and counting it would change
the documented units of a basin's lambda and an affine plane's axes with whatever constants a
model happens to store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lossurf.errors import LossurfError

__all__ = [
    "StateDict",
    "as_state",
    "moving_keys",
    "check_compatible",
    "flatten",
    "unflatten",
    "norm",
    "distance",
    "combine",
    "state_hash",
    "to_dtypes_of",
    "check_finite_weights",
]

StateDict = Mapping[str, torch.Tensor]


def as_state(source: nn.Module | StateDict) -> dict[str, torch.Tensor]:
    """A detached, plain-dict state dict of a module or mapping (the tensors are not copied).

    Args:
        source: an ``nn.Module`` (its ``state_dict()`` is taken) or a mapping of name to tensor.

    Returns:
        ``{name: tensor}`` in the source's key order.
    """
    if isinstance(source, nn.Module):
        source = source.state_dict()
    if not isinstance(source, Mapping):
        raise LossurfError(
            f"expected an nn.Module or a state dict (mapping of name to tensor), got "
            f"{type(source).__name__}; pass model.state_dict() or a loaded checkpoint"
        )
    out = {}
    for key, value in source.items():
        if not isinstance(value, torch.Tensor):
            raise LossurfError(
                f"state dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                "pass a state dict such as model.state_dict()"
            )
        out[key] = value.detach()
    return out


def moving_keys(source: nn.Module | StateDict, *, buffers: bool = False) -> list[str]:
    """Names of the tensors a weight-space path moves, in state-dict order.

    Args:
        source: a module (its parameters are known exactly) or a state dict (where every
            floating-point tensor that is not a batch-norm running statistic counts as a
            parameter, since a plain state dict does not mark which tensors are buffers).
        buffers: also include floating-point buffers such as batch-norm running statistics
            (default False). Integer buffers are never included.

    Returns:
        The moving keys; tied parameters appear once.
    """
    if isinstance(source, nn.Module):
        names = [n for n, _ in source.named_parameters()]
        if buffers:
            state_keys = set(source.state_dict().keys())
            names += [
                n
                for n, b in source.named_buffers()
                if b.is_floating_point() and n in state_keys
            ]
        order = {k: i for i, k in enumerate(source.state_dict().keys())}
        return sorted(names, key=lambda k: order.get(k, len(order)))
    state = as_state(source)
    # Without a module, BN running statistics are recognised by their torch names.
    bn_stats = ("running_mean", "running_var")
    return [
        k
        for k, v in state.items()
        if v.is_floating_point() and (buffers or not k.rsplit(".", 1)[-1] in bn_stats)
    ]


def check_compatible(states: Sequence[StateDict], names: Sequence[str] | None = None) -> None:
    """Raise a :class:`LossurfError` unless all state dicts share keys, shapes and dtypes.

    Args:
        states: the state dicts to compare (the first one is the reference).
        names: labels for the messages (default ``point 0``, ``point 1``, ...).
    """
    if not states:
        raise LossurfError("no weight vectors given; pass at least one state dict")
    names = list(names) if names is not None else [f"point {i}" for i in range(len(states))]
    first = states[0]
    for name, other in zip(names[1:], states[1:]):
        missing = [k for k in first if k not in other]
        extra = [k for k in other if k not in first]
        if missing or extra:
            key = missing[0] if missing else extra[0]
            where = f"{names[0]} has it, {name} does not" if missing else (
                f"{name} has it, {names[0]} does not"
            )
            raise LossurfError(
                f"{names[0]} and {name} are different architectures: key {key!r} ({where}); "
                "use checkpoints of the same model"
            )
        for key, value in first.items():
            ov = other[key]
            if value.shape == ov.shape and value.dtype != ov.dtype:
                how = ".float()" if value.dtype == torch.float32 else f".to({value.dtype})"
                raise LossurfError(
                    f"key {key!r} is {value.dtype} in {names[0]} but {ov.dtype} in {name}: the "
                    f"same architecture in another dtype; convert {name}'s tensors to "
                    f"{value.dtype} (e.g. {{k: v{how} for k, v in state.items()}} for floating "
                    "weights), or load them into the model with load_state_dict"
                )
            if value.shape != ov.shape:
                raise LossurfError(
                    f"{names[0]} and {name} are different architectures: key {key!r} is "
                    f"{tuple(value.shape)} {value.dtype} in {names[0]} but {tuple(ov.shape)} "
                    f"{ov.dtype} in {name}; use checkpoints of the same model"
                )


def to_dtypes_of(state: StateDict, like: StateDict) -> dict[str, torch.Tensor]:
    """``state`` with each floating tensor cast to the floating dtype of ``like``'s tensor of
    the same name (as ``load_state_dict`` casts); other tensors are kept as they are, so an
    integer-for-float mismatch is still reported by :func:`check_compatible`."""
    out = {}
    for key, value in state.items():
        ref = like.get(key)
        if (ref is not None and value.is_floating_point() and ref.is_floating_point()
                and value.dtype != ref.dtype):
            value = value.to(ref.dtype)
        out[key] = value
    return out


def flatten(
    state: StateDict, keys: Sequence[str], dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Concatenate ``state[k]`` for ``k`` in ``keys`` into one CPU vector of ``dtype``."""
    if not keys:
        return torch.zeros(0, dtype=dtype)
    return torch.cat([state[k].detach().reshape(-1).to("cpu", dtype) for k in keys])


def unflatten(
    vector: torch.Tensor, like: StateDict, keys: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Split a flat vector back into tensors shaped (and typed) like ``like[k]``."""
    sizes = [like[k].numel() for k in keys]
    if sum(sizes) != vector.numel():
        raise LossurfError(
            f"vector has {vector.numel()} entries but the keys need {sum(sizes)}; "
            "flatten and unflatten with the same keys"
        )
    pieces = torch.split(vector, sizes)
    return {
        k: p.reshape(like[k].shape).to(like[k].device, like[k].dtype) for k, p in zip(keys, pieces)
    }


def norm(state: StateDict, keys: Sequence[str]) -> float:
    """Euclidean norm of the moving tensors, accumulated in float64."""
    total = sum(float(state[k].detach().double().pow(2).sum()) for k in keys)
    return float(np.sqrt(total))


def distance(a: StateDict, b: StateDict, keys: Sequence[str]) -> float:
    """Euclidean distance ``||a - b||`` over ``keys``, accumulated in float64."""
    total = 0.0
    for k in keys:
        diff = a[k].detach().double().cpu() - b[k].detach().double().cpu()
        total += float(diff.pow(2).sum())
    return float(np.sqrt(total))


def combine(
    anchors: Sequence[StateDict],
    coefficients: Sequence[float] | np.ndarray | torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The affine combination ``sum_i c_i * anchors[i]`` as a new state dict.

    Floating-point tensors are combined in float64 and cast back to their own dtype, so a
    one-hot coefficient row reproduces its anchor bit for bit. Integer tensors (e.g.
    ``num_batches_tracked``) do not move: they are taken from the anchor with the largest
    coefficient.

    Args:
        anchors: state dicts of one architecture.
        coefficients: one weight per anchor.

    Returns:
        A new state dict; the anchors are not modified.
    """
    coef = np.asarray(torch.as_tensor(coefficients, dtype=torch.float64).cpu(), dtype=np.float64)
    if coef.shape != (len(anchors),):
        raise LossurfError(
            f"got {coef.size} coefficients for {len(anchors)} anchors; give one per anchor"
        )
    lead = int(np.argmax(coef))
    out = {}
    for key, ref in anchors[lead].items():
        if not ref.is_floating_point():
            out[key] = ref.clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for c, anchor in zip(coef, anchors):
            if c != 0.0:
                acc += float(c) * anchor[key].detach().to(ref.device, torch.float64)
        out[key] = acc.to(ref.dtype)
    return out


def state_hash(state: StateDict) -> str:
    """A stable sha256 of a state dict's content: sorted keys, dtypes, shapes and raw bytes.

    Two state dicts hash equal exactly when they hold the same tensors under the same names,
    whatever the device or the dict's key order.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        # view as bytes so every dtype (bfloat16 included) hashes without a numpy round trip
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_finite_weights(state: StateDict, what: str) -> None:
    """Refuse weights with NaN or Inf in a floating-point tensor (parameters or statistics):
    no loss, Hessian or matching is defined there, and the numerics would fail far from here.

    Raises:
        LossurfError: names the first such tensor, its count, and how many more there are.
    """
    bad = [(k, v) for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all())]
    if not bad:
        return
    key, tensor = bad[0]
    count = int((~tensor.isfinite()).sum())
    more = f"; {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''} too" if len(bad) > 1 else ""
    raise LossurfError(f"{what}: tensor {key!r} holds NaN or Inf ({count} of {tensor.numel()} "
                       f"entries{more}); pass finite weights (a checkpoint from before the run "
                       "diverged)")
