"""Which weights a hidden-unit permutation moves: a spec traced from the module graph.

Permuting the hidden units of a layer (the rows of its weight, the entries of its bias and of
the batch norm that follows it) and, in the same way, the input dimension of the layer that
consumes them leaves the network's function unchanged. A :class:`PermutationSpec` lists, per
hidden layer (a *group*), every tensor axis that its permutation acts on.

The spec is derived by tracing the model with ``torch.fx`` and walking the graph, which must be
a chain (no branches) of ``Linear``, ``Conv2d`` (``groups=1``), ``BatchNorm1d/2d``, element-wise
activations, channel-wise pools, dropout and ``flatten(x, 1)``. That covers the registry's
``mlp``, ``cnn-small``, ``vgg``, ``vgg-small``, ``nin`` and ``nin-small`` and a user's
``nn.Sequential`` of the same pieces; anything else (an LSTM, an embedding, a residual add) is
refused with one line naming the model and the operation. Conventions:

- the group of a layer is named after the layer's module path (``features.conv1.conv``);
- a ``flatten`` after a convolution turns each channel into a block of consecutive inputs of
  the next ``Linear`` (``in_features = channels * block``): the permutation moves blocks;
- the layer that produces the output is never permuted (its units are the classes).

A permutation ``p`` of a group maps new unit ``i`` to old unit ``p[i]``: ``W'[i] = W[p[i]]``.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from lossurf.errors import LossurfError
from lossurf.params import StateDict

__all__ = [
    "Axis",
    "PermutationGroup",
    "PermutationSpec",
    "permutation_spec",
    "apply_permutation",
    "identity_permutation",
    "random_permutation",
    "invert_permutation",
    "permutation_hash",
]

Permutation = Mapping[str, torch.Tensor]

# Layers that act on each unit (channel, feature) alone: permuting units commutes with them.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
    nn.Softplus, nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.AlphaDropout,
)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, torch.sigmoid,
    F.dropout, F.relu6, F.hardtanh,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "contiguous"}
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}


@dataclass(frozen=True)
class Axis:
    """One tensor axis that a group's permutation acts on.

    Attributes:
        key: the state-dict key (``features.conv2.conv.weight``).
        dim: the permuted dimension.
        block: consecutive entries per unit along ``dim`` (1, or ``H * W`` for the input of a
            ``Linear`` after ``flatten``).
    """

    key: str
    dim: int
    block: int = 1


@dataclass(frozen=True)
class PermutationGroup:
    """The hidden units of one layer: ``size`` units and every axis their permutation moves."""

    name: str
    size: int
    axes: tuple[Axis, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """The permutation groups of a model (in graph order), with the model's name for messages."""

    model: str
    groups: tuple[PermutationGroup, ...]

    def group(self, name: str) -> PermutationGroup:
        """The group called ``name``."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def axes_by_key(self) -> dict[str, list[tuple[str, Axis]]]:
        """``key -> [(group name, axis), ...]``: the groups acting on each tensor."""
        out: dict[str, list[tuple[str, Axis]]] = {}
        for group in self.groups:
            for axis in group.axes:
                out.setdefault(axis.key, []).append((group.name, axis))
        return out


def model_name(model: nn.Module) -> str:
    """``'mlp' (MLP)`` for a registry model, the class name otherwise (for messages)."""
    from lossurf.models import MODELS

    cls = type(model)
    for name, factory in MODELS.items():
        if factory is cls:
            return f"{name!r} ({cls.__name__})"
    return cls.__name__


@dataclass
class _Activation:
    """What flows along an edge: which group indexes its units, and how they are laid out.

    ``layout``: ``input`` (no group), ``conv`` (units on dim 1 of ``[N, C, H, W]``),
    ``linear`` (units on the last dim), ``flat`` (a flattened conv activation: units are
    blocks of consecutive features).
    """

    group: str | None
    layout: str


class _Builder:
    def __init__(self, model: nn.Module, name: str) -> None:
        self.model = model
        self.name = name
        self.modules = dict(model.named_modules())
        self.sizes: dict[str, int] = {}
        self.axes: dict[str, list[Axis]] = {}
        self.used: set[str] = set()

    def refuse(self, why: str) -> LossurfError:
        return LossurfError(
            f"weight matching cannot align model {self.name}: {why}; alignment supports "
            "branch-free chains of Linear/Conv2d/BatchNorm/activation/pool/dropout/flatten "
            "(the registry's mlp, cnn-small, vgg, vgg-small, nin, nin-small)"
        )

    def consume(self, act: _Activation, key: str, size: int, block_ok: bool, what: str) -> None:
        """Record that ``key``'s dim 1 reads the units of ``act`` (a consumer's input)."""
        if act.group is None:
            return
        units = self.sizes[act.group]
        block = 1
        if act.layout == "flat":
            if not block_ok or size % units:
                raise self.refuse(f"{what} reads {size} features from a flattened layer of "
                                  f"{units} channels")
            block = size // units
        elif size != units:
            raise self.refuse(f"{what} expects {size} inputs but its input layer has {units}")
        self.axes[act.group].append(Axis(key, 1, block))

    def produce(self, target: str, module: nn.Module, size: int) -> str:
        self.sizes[target] = size
        self.axes[target] = [Axis(f"{target}.weight", 0)]
        if module.bias is not None:
            self.axes[target].append(Axis(f"{target}.bias", 0))
        return target

    def module_node(self, node: fx.Node, act: _Activation) -> _Activation:
        target = str(node.target)
        module = self.modules[target]
        if target in self.used and not isinstance(module, _ELEMENTWISE_MODULES + _POOLS):
            raise self.refuse(f"layer {target!r} is used twice (shared weights)")
        self.used.add(target)
        kind = type(module).__name__
        if isinstance(module, nn.Linear):
            if act.layout == "conv":
                raise self.refuse(f"Linear {target!r} reads a conv activation without flatten")
            self.consume(act, f"{target}.weight", module.in_features, True, f"Linear {target!r}")
            return _Activation(self.produce(target, module, module.out_features), "linear")
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise self.refuse(f"Conv2d {target!r} is grouped (groups={module.groups})")
            if act.layout in ("linear", "flat"):
                raise self.refuse(f"Conv2d {target!r} reads a flat activation")
            self.consume(act, f"{target}.weight", module.in_channels, False, f"Conv2d {target!r}")
            return _Activation(self.produce(target, module, module.out_channels), "conv")
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            wanted = "conv" if isinstance(module, nn.BatchNorm2d) else "linear"
            if act.group is not None:
                if act.layout != wanted or module.num_features != self.sizes[act.group]:
                    raise self.refuse(f"{kind} {target!r} does not match its input layer")
                for leaf in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(module, leaf, None) is not None:
                        self.axes[act.group].append(Axis(f"{target}.{leaf}", 0))
            return act
        if isinstance(module, _ELEMENTWISE_MODULES):
            return act
        if isinstance(module, _POOLS):
            if act.layout in ("linear", "flat"):
                raise self.refuse(f"{kind} {target!r} pools a flat activation")
            return act
        if isinstance(module, nn.Flatten):
            return self.flatten(act, module.start_dim, module.end_dim, target)
        raise self.refuse(f"layer {target!r} is a {kind}, which alignment does not permute")

    def flatten(self, act: _Activation, start: object, end: object, where: str) -> _Activation:
        if start != 1 or end != -1:
            raise self.refuse(f"{where} flattens dims {start}..{end}; only flatten(x, 1) is "
                              "supported")
        if act.group is None:
            return act
        return _Activation(act.group, "flat" if act.layout in ("conv", "flat") else "linear")

    def function_node(self, node: fx.Node, act: _Activation) -> _Activation:
        fn = node.target
        if fn is torch.flatten or (node.op == "call_method" and fn == "flatten"):
            args = list(node.args[1:])
            start = node.kwargs.get("start_dim", args[0] if args else 0)
            end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
            return self.flatten(act, start, end, "torch.flatten")
        if fn in _ELEMENTWISE_FUNCTIONS or (node.op == "call_method" and fn in _ELEMENTWISE_METHODS):
            return act
        if fn in _POOL_FUNCTIONS and act.layout not in ("linear", "flat"):
            return act
        label = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
        if fn in (operator.add, torch.add, torch.cat):
            raise self.refuse(f"its forward combines two tensors ({label}): a branch")
        raise self.refuse(f"its forward calls {label}, which alignment cannot follow")


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """Trace ``model`` and list its permutation groups (see the module docstring).

    Args:
        model: an ``nn.Module`` whose forward is a chain of supported layers.

    Returns:
        The spec; the output layer's units are not in it.

    Raises:
        LossurfError: the model does not trace, branches, or uses a layer alignment cannot
            permute (an LSTM, an embedding, grouped convolutions, ...); the message names it.
    """
    builder = _Builder(model, model_name(model))
    for module_path, module in model.named_modules():
        if isinstance(module, (nn.RNNBase, nn.Embedding, nn.MultiheadAttention)):
            raise builder.refuse(
                f"layer {module_path!r} is a {type(module).__name__}, whose hidden units "
                "weight matching does not permute"
            )
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # fx raises many types for data-dependent control flow
        raise builder.refuse(f"its forward does not trace with torch.fx ({type(error).__name__})"
                             ) from None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise builder.refuse(f"its forward takes {len(inputs)} inputs, not one")
    act = _Activation(None, "input")
    node = inputs[0]
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise builder.refuse(f"the output of {node.name!r} feeds {len(users)} operations "
                                 "(a branch)")
        node = users[0]
        tensor_args = [a for a in node.all_input_nodes]
        if len(tensor_args) != 1:
            raise builder.refuse(f"{node.name!r} combines {len(tensor_args)} tensors (a branch)")
        if node.op == "output":
            break
        if node.op == "call_module":
            act = builder.module_node(node, act)
        elif node.op in ("call_function", "call_method"):
            act = builder.function_node(node, act)
        else:
            raise builder.refuse(f"its graph reads {node.op} {node.target!r}")
    groups = tuple(
        PermutationGroup(name, builder.sizes[name], tuple(builder.axes[name]))
        for name in builder.sizes
        if name != act.group  # the output layer's units are the classes: never permuted
    )
    return PermutationSpec(builder.name, groups)


def _permute_axis(tensor: torch.Tensor, axis: Axis, perm: torch.Tensor) -> torch.Tensor:
    shape = tensor.shape
    units = perm.numel()
    blocks = tensor.reshape(*shape[: axis.dim], units, axis.block, *shape[axis.dim + 1:])
    return blocks.index_select(axis.dim, perm.to(tensor.device)).reshape(shape)


def apply_permutation(
    state: StateDict, spec: PermutationSpec, perm: Permutation, *, skip: str | None = None
) -> dict[str, torch.Tensor]:
    """Permute ``state`` by ``perm`` (group name -> LongTensor), leaving the function unchanged.

    Args:
        state: a state dict of the spec's model (not modified).
        spec: from :func:`permutation_spec`.
        perm: one permutation per group (``W'[i] = W[p[i]]``); missing groups stay as they are.
        skip: leave this group out (the matching uses this to see the other groups' effect).

    Returns:
        A new state dict; tensors no group touches are the same objects as in ``state``.
    """
    out = dict(state)
    for group in spec.groups:
        if group.name == skip or group.name not in perm:
            continue
        p = perm[group.name]
        for axis in group.axes:
            out[axis.key] = _permute_axis(out[axis.key], axis, p)
    return out


def identity_permutation(spec: PermutationSpec) -> dict[str, torch.Tensor]:
    """The identity permutation of every group."""
    return {g.name: torch.arange(g.size) for g in spec.groups}


def random_permutation(spec: PermutationSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A uniformly random permutation of every group, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return {g.name: torch.from_numpy(rng.permutation(g.size)).long() for g in spec.groups}


def invert_permutation(perm: Permutation) -> dict[str, torch.Tensor]:
    """The inverse of every group's permutation: applying both in turn gives the identity."""
    return {name: torch.argsort(p) for name, p in perm.items()}


def permutation_hash(perm: Permutation) -> str:
    """sha256 of the group names and their permutations (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(perm):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(perm[name].cpu().numpy(), np.int64).tobytes())
    return digest.hexdigest()
