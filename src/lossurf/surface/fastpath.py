"""Graph rewrites for the per-point evaluation loop: BN folding, a shared first layer, compile.

All rewrites work on ``torch.fx`` traces of an internal copy of the user's model (never the
model itself). A model that does not trace simply runs unrewritten.

- **BN folding**: an eval-mode ``BatchNorm`` directly after a ``Conv``/``Linear`` (whose output
  feeds nothing else) is removed from the graph; the layer is replaced by one with its own
  weights, rewritten at each point as ``W * s`` and ``(b - mean) * s + beta``.
- **Shared first layer**: when the input reaches exactly one ``Linear``/``Conv`` (possibly after
  input-only reshapes such as ``flatten``), that layer is linear in ``(W, b)`` for a fixed input,
  so its output at ``theta_p = sum_a c_pa theta_a`` is ``sum_a c_pa (W_a z + b_a)``. The graph
  gets a ``first_out`` input instead of the layer; the caller combines cached per-anchor outputs.
- **compile**: ``torch.compile`` of the evaluation graph, falling back to eager (with a warning)
  if compilation fails.
"""

from __future__ import annotations

import operator
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "LINEAR_LAYERS",
    "FoldPair",
    "FirstLayer",
    "trace",
    "find_fold_pairs",
    "find_first_layer",
    "rewrite",
    "SafeCompiled",
    "compiler_available",
]

#: Layers that are linear in ``(weight, bias)`` and whose output channel is weight dim 0.
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_FOR = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


@dataclass(frozen=True)
class FoldPair:
    """A BN layer ``bn`` that can be folded into the layer ``layer`` right before it."""

    layer: str
    bn: str


@dataclass(frozen=True)
class FirstLayer:
    """The first weight layer: ``layer`` applied to ``pre(x)`` (input-only ops)."""

    layer: str
    pre: fx.GraphModule = field(compare=False)


def trace(module: nn.Module) -> fx.GraphModule | None:
    """A symbolic trace of ``module``, or None where it does not trace (data-dependent code)."""
    try:
        return fx.symbolic_trace(module)
    except Exception:  # any tracing failure just disables the rewrites
        return None


def _modules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def _single_use_targets(gm: fx.GraphModule) -> set[str]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return {t for t, c in counts.items() if c == 1}


def find_fold_pairs(gm: fx.GraphModule, example: torch.Tensor) -> list[FoldPair]:
    """``Conv -> BN`` / ``Linear -> BN1d`` pairs that fold exactly in eval mode.

    ``example`` is a small input batch, used to check that a ``Linear`` output is 2-D (only then
    does ``BatchNorm1d`` normalise its features).
    """
    from torch.fx.passes.shape_prop import ShapeProp

    mods = _modules(gm)
    once = _single_use_targets(gm)
    try:
        ShapeProp(gm).propagate(example)
    except Exception:
        return []
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods[node.target], _BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if (len(node.args) != 1 or node.kwargs or not isinstance(src, fx.Node)
                or src.op != "call_module" or len(src.users) != 1
                or node.target not in once or src.target not in once):
            continue
        layer, bn = mods[src.target], mods[node.target]
        if not isinstance(layer, LINEAR_LAYERS) or layer.weight.shape[0] != bn.num_features:
            continue
        meta = src.meta.get("tensor_meta")
        if isinstance(layer, nn.Linear) and (meta is None or len(meta.shape) != 2):
            continue
        if type(layer) in _BN_FOR and meta is None:
            continue
        pairs.append(FoldPair(src.target, node.target))
    return pairs


def find_first_layer(gm: fx.GraphModule) -> FirstLayer | None:
    """The single weight layer that all of the input flows into, if there is one."""
    mods = _modules(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return None
    # Nodes computed from the input alone (reshapes, flatten, ...).
    pure = {placeholders[0]}
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method"):
            deps = node.all_input_nodes
            if deps and all(d in pure for d in deps):
                pure.add(node)
    consumers = {u for n in pure for u in n.users if u not in pure}
    if len(consumers) != 1:
        return None
    first = next(iter(consumers))
    if (first.op != "call_module" or not isinstance(mods[first.target], LINEAR_LAYERS)
            or len(first.args) != 1 or first.kwargs or first.target not in _single_use_targets(gm)):
        return None
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder" or node in pure:
            env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(env[first.args[0]])
    return FirstLayer(first.target, fx.GraphModule(gm, graph))


def _fresh_layer(layer: nn.Module, channels_last: bool) -> nn.Module:
    """A copy of ``layer`` with its own weight and a bias (the folded layer needs one)."""
    import copy

    new = copy.copy(layer)
    new._parameters = dict(layer._parameters)  # type: ignore[assignment]
    # the layer's own order: channels-last, except for a layer that runs in NCHW
    last = (channels_last and layer.weight.dim() == 4
            and layer.weight.is_contiguous(memory_format=torch.channels_last))
    fmt = torch.channels_last if last else torch.contiguous_format
    new.weight = nn.Parameter(torch.empty_like(layer.weight, memory_format=fmt), requires_grad=False)
    new.bias = nn.Parameter(layer.weight.new_empty(layer.weight.shape[0]), requires_grad=False)
    return new


def rewrite(
    module: nn.Module, folds: list[FoldPair], first: FirstLayer | None, channels_last: bool
) -> tuple[fx.GraphModule, dict[str, nn.Module]]:
    """A graph module sharing ``module``'s layers, with ``folds`` applied and, if ``first`` is
    given, the first layer replaced by a ``first_out`` input (keyword, default None).

    Returns the graph module and the new folded layers by name (their weights are to be written
    at each point with :func:`lossurf.surface.batchnorm.fold_into`).
    """
    gm = fx.symbolic_trace(module)
    graph = gm.graph
    nodes = {n.target: n for n in graph.nodes if n.op == "call_module"}
    folded: dict[str, nn.Module] = {}
    for pair in folds:
        bn_node, layer_node = nodes[pair.bn], nodes[pair.layer]
        bn_node.replace_all_uses_with(layer_node)
        graph.erase_node(bn_node)
        new = _fresh_layer(gm.get_submodule(pair.layer), channels_last)
        gm.add_submodule(pair.layer, new)  # replaces it in gm's own (fresh) hierarchy only
        folded[pair.layer] = new
    if first is not None:
        node = nodes[first.layer]
        last_placeholder = [n for n in graph.nodes if n.op == "placeholder"][-1]
        with graph.inserting_after(last_placeholder):
            ph = graph.placeholder("first_out", default_value=None)
        node.replace_all_uses_with(ph)
        graph.erase_node(node)
    _inplace_relu(gm)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return gm, folded


#: Functions whose output may share memory with their input: a ReLU after one of them must not
#: run in place (it would write into the input, possibly the caller's data).
_VIEWS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
          torch.permute, torch.narrow, torch.select, torch.t, torch.movedim, torch.chunk,
          torch.split, torch.Tensor.contiguous, operator.getitem}


def _fresh(node: object, mods: dict[str, nn.Module]) -> bool:
    """Whether ``node`` surely makes a new tensor that only the graph holds."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "placeholder":  # the evaluator's own combination of first-layer outputs
        return node.target == "first_out"
    if node.op == "call_module":  # a layer with weights computes a new tensor
        return any(True for _ in mods[node.target].parameters(recurse=False))
    return node.op == "call_function" and node.target not in _VIEWS


def _inplace_relu(gm: fx.GraphModule) -> None:
    # Eager CPU evaluation is memory bound: a ReLU on a fresh, single-use activation can run
    # in place, which saves an allocation and a pass over memory.
    mods = _modules(gm)
    for node in list(gm.graph.nodes):
        module_relu = node.op == "call_module" and type(mods.get(node.target)) is nn.ReLU
        function_relu = (node.op == "call_function" and node.target in (torch.relu, F.relu)
                         and not node.kwargs)
        if not (module_relu or function_relu) or len(node.args) != 1:
            continue
        src = node.args[0]
        if _fresh(src, mods) and len(src.users) == 1:
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(torch.relu_, (src,))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)


def compiler_available() -> bool:
    """Whether a C compiler for inductor's CPU backend is on PATH."""
    return any(shutil.which(cc) for cc in ("gcc", "cc", "clang"))


class SafeCompiled:
    """``torch.compile(fn)``; on any failure during the first calls it warns and runs eager."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        with warnings.catch_warnings():
            # torch.compile imports torch.utils.mkldnn, whose module body (torch 2.13) still
            # uses torch.jit.script_method: a DeprecationWarning about torch's own code.
            warnings.filterwarnings("ignore", r"`torch\.jit\.script_method` is", DeprecationWarning)
            import torch.utils.mkldnn  # noqa: F401
        self.eager = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=False)
        self.failed = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # compilation problems must never break evaluation
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); "
                              "evaluating in eager mode", RuntimeWarning, stacklevel=2)
                self.compiled, self.failed = None, True
        return self.eager(*args, **kwargs)
