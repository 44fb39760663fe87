"""The two strategies behind :class:`lossurf.surface.evaluate.Evaluator`.

Both take a ``[K, A]`` block of coefficients and yield the logits of every evaluation batch at
those K points; the evaluator turns logits into metrics.

- :class:`LoopRunner` (CPU default): one point at a time on an internal copy of the model whose
  combined tensors are views into one flat buffer, so a point's weights are written by a single
  ``[A] @ [A, D]`` product. Channels-last layout, BN folding, the shared first layer and
  ``torch.compile`` come from :mod:`lossurf.surface.fastpath`.
- :class:`VmapRunner` (CUDA default): K points per pass with ``torch.vmap`` over
  ``torch.func.functional_call`` on stacked weights.

Under ``recompute`` both run the statistics pass of :mod:`lossurf.surface.statspass` where the
network traces (one graph, several statistics batches per call, stopped at the last BN layer),
else PyTorch's train-mode modules (loop) or recording hooks (vmap) per statistics batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from lossurf.precision import no_autocast
from lossurf.surface.batchnorm import (
    BN_STAT_NAMES,
    StatsRecorder,
    batchnorm_modules,
    begin_recompute,
    end_recompute,
    fold_into,
    is_bn_stat,
    use_batch_statistics,
)
from lossurf.surface.fastpath import (
    SafeCompiled,
    find_first_layer,
    find_fold_pairs,
    rewrite,
    trace,
)
from lossurf.surface.statspass import add_stats, apply_stats, call_slices, stats_graph

__all__ = ["LoopRunner", "VmapRunner", "batches", "combined_keys"]

StateDict = Mapping[str, torch.Tensor]
#: Per-anchor first-layer outputs may use at most this much memory (else the layer is not shared).
SHARE_MEMORY_BYTES = 1 << 30


def batches(n: int, size: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` of length ``size`` (the last may be shorter)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def combined_keys(model: nn.Module, policy: str, dedupe: bool = False) -> list[str]:
    """State-dict keys combined with the coefficients: floating parameters, floating buffers
    that are not BN running statistics (a user's scale or mask moves with the weights under
    every policy), plus the BN running statistics under ``interpolate``. Integer buffers
    (``num_batches_tracked``) and non-persistent buffers (not in the anchors) are not combined:
    they keep anchor 0's (the model's) value."""
    keys = [k for k, p in model.named_parameters(remove_duplicate=dedupe) if p.is_floating_point()]
    bns = batchnorm_modules(model)
    state = model.state_dict(keep_vars=True)
    seen = set(keys)
    for k, b in model.named_buffers(remove_duplicate=dedupe):
        if k in seen or k not in state or b is None or not b.is_floating_point():
            continue
        if is_bn_stat(k, bns) and policy != "interpolate":
            continue
        keys.append(k)
        seen.add(k)
    return keys


def _physical(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` flattened in the memory order the internal copy uses."""
    return (t.permute(0, 2, 3, 1) if channels_last and t.dim() == 4 else t).reshape(-1)


def _set(module: nn.Module, key: str, value: torch.Tensor) -> None:
    owner, _, leaf = key.rpartition(".")
    target = module.get_submodule(owner) if owner else module
    if leaf in target._parameters:
        setattr(target, leaf, nn.Parameter(value, requires_grad=False))
    else:
        setattr(target, leaf, value)


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of a convolution that runs in NCHW (see :mod:`.layouts`)."""
    return (args[0].contiguous(),) + args[1:]


class _Layout:
    """Where each combined tensor lives in the flat ``[D]`` vector (4-D tensors in
    channels-last order, except those of the layers in ``nchw``)."""

    def __init__(self, model: nn.Module, keys: list[str], channels_last: bool,
                 nchw: frozenset[str] = frozenset()) -> None:
        state = model.state_dict(keep_vars=True)
        self.keys = keys
        self.shapes = [tuple(state[k].shape) for k in keys]
        self.last = [channels_last and len(shape) == 4 and k.rpartition(".")[0] not in nchw
                     for k, shape in zip(keys, self.shapes)]
        sizes = [state[k].numel() for k in keys]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def matrix(self, anchors: Sequence[StateDict], device: torch.device) -> torch.Tensor:
        """``[A, D]`` float32: row a is anchor a's combined tensors, flattened."""
        m = torch.empty(len(anchors), self.size, device=device)
        for a, sd in enumerate(anchors):
            for i, k in enumerate(self.keys):
                m[a, self.offsets[i]: self.offsets[i + 1]] = _physical(sd[k], self.last[i])
        return m

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Tensor ``i`` as a view of ``flat`` (``[D]``, or ``[K, D]`` with a leading K)."""
        lead = flat.shape[:-1]
        part = flat[..., self.offsets[i]: self.offsets[i + 1]]
        shape = self.shapes[i]
        if self.last[i]:
            o, c, h, w = shape
            return part.view(*lead, o, h, w, c).movedim(-1, len(lead) + 1)
        return part.view(*lead, *shape)


def _internal_copy(model: nn.Module, device: torch.device) -> nn.Module:
    work = copy.deepcopy(model).to(device).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    return work


def _load_fixed(module: nn.Module, anchor: StateDict, skip: set[str]) -> None:
    """Copy anchor 0's tensors that are not combined (integer buffers and the like)."""
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, t in state.items():
            if k not in skip and t is not None:
                t.copy_(anchor[k])


class _Variant:
    """The evaluation (and statistics) graphs for one choice of first-layer sharing."""

    def __init__(self, runner: LoopRunner, split: bool, compile_: bool) -> None:
        work, first = runner.work, runner.first if split else None
        folds = [f for f in runner.folds if not (first is not None and f.layer == first.layer)]
        if folds or first is not None:
            self.eval_module, folded = rewrite(work, folds, first, runner.channels_last)
        else:
            self.eval_module, folded = work, {}
        self.stat_module = rewrite(work, [], first, runner.channels_last)[0] if first else work
        self.folds = [(work.get_submodule(f.layer), work.get_submodule(f.bn), folded[f.layer])
                      for f in folds]
        self.eval_fn = SafeCompiled(self.eval_module) if compile_ else self.eval_module
        self.compiled = compile_
        # the statistics pass as one graph (see lossurf.surface.statspass), else the modules
        self.stats = self.stats_fn = None
        if runner.grouped:
            base = self.stat_module if first else rewrite(work, [], None, runner.channels_last)[0]
            self.stats = stats_graph(base, runner.bns, runner.bn_batch)
            self.stats_fn = SafeCompiled(self.stats) if compile_ and self.stats else self.stats


class LoopRunner:
    """One point at a time on a rewritten internal copy of the model (the CPU strategy)."""

    max_points = 1
    #: When True, a point runs only its first statistics call and first evaluation batch: a
    #: sample of its work, for timing (its metrics are meaningless).
    sample = False

    def __init__(self, model: nn.Module, policy: str, device: torch.device, x: torch.Tensor,
                 bn_x: torch.Tensor | None, batch_size: int, bn_batch_size: int, *,
                 channels_last: bool, fold_bn: bool, nchw: frozenset[str] = frozenset()) -> None:
        self.policy, self.device = policy, device
        self.work = work = _internal_copy(model, device)
        self.bns = batchnorm_modules(work)
        if policy == "batch":
            use_batch_statistics(self.bns)
        self.channels_last = channels_last and x.dim() == 4
        self.nchw = nchw if self.channels_last else frozenset()
        if self.channels_last:
            work.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
            bn_x = None if bn_x is None else bn_x.contiguous(memory_format=torch.channels_last)
            # a hook, not a graph edit: it reaches every graph built from ``work`` (evaluation,
            # statistics, train-mode modules) and the folded copies of these layers
            for name in self.nchw:
                work.get_submodule(name).register_forward_pre_hook(_contiguous_input)
        self.x, self.bn_x = x, bn_x
        self.eval_slices = batches(len(x), batch_size)
        self.recompute = policy == "recompute" and bool(self.bns)
        self.bn_slices = batches(len(bn_x), bn_batch_size) if self.recompute else []
        self.bn_batch = bn_batch_size
        self.layout = _Layout(work, combined_keys(work, policy), self.channels_last, self.nchw)
        self.flat = torch.zeros(self.layout.size, device=device)
        for i, k in enumerate(self.layout.keys):  # the copy's tensors become views of ``flat``
            _set(work, k, self.layout.view(self.flat, i))
        gm = trace(work)
        use_folds = fold_bn and gm is not None and policy != "batch" and self.bns
        self.folds = find_fold_pairs(gm, x[:2]) if use_folds else []
        self.first = find_first_layer(gm) if gm is not None else None
        # statistics batches run as one graph, as many per call as fill an evaluation batch
        self.grouped = (self.recompute and gm is not None
                        and stats_graph(gm, self.bns, bn_batch_size) is not None)
        groups = max(1, batch_size // bn_batch_size) if self.grouped else 1
        self.bn_calls = call_slices(len(bn_x), bn_batch_size, groups) if self.recompute else []
        self._variants: dict[tuple[bool, bool], _Variant] = {}
        self._split = False
        self._cache_key: list[torch.Tensor] | None = None
        self._first_eval: list[torch.Tensor] = []
        self._first_bn: list[torch.Tensor] = []

    def first_layer_info(self) -> tuple[int, int] | None:
        """``(fan_in, output values per example)`` of the shareable first layer, if any."""
        if self.first is None:
            return None
        layer = self.work.get_submodule(self.first.layer)
        with torch.no_grad():
            out = layer(self.first.pre(self.x[:1]))
        return layer.weight[0].numel(), out.numel()

    def should_share(self, num_anchors: int) -> bool:
        """Share the first layer when it does real work per output value and the per-anchor
        outputs fit in memory. Combining is memory bound (A reads and one write per output
        value), so the layer's fan-in must be well above A: measured on CPU, a 3x3 conv on RGB
        (fan-in 27) is cheaper to recompute than to combine from 3 anchors."""
        info = self.first_layer_info()
        if info is None:
            return False
        fan_in, per_example = info
        examples = len(self.x) + (len(self.bn_x) if self.recompute else 0)
        return fan_in >= 16 * num_anchors and num_anchors * examples * per_example * 4 <= SHARE_MEMORY_BYTES

    def prepare(self, anchors: Sequence[StateDict], share: bool, compile_: bool) -> None:
        """Load the anchors (and, when sharing, their first-layer outputs, cached by value)."""
        self.matrix = self.layout.matrix(anchors, self.device)
        _load_fixed(self.work, anchors[0], set(self.layout.keys))
        self._split = share and self.first is not None
        key = (self._split, compile_)
        if key not in self._variants:
            self._variants[key] = _Variant(self, self._split, compile_)
        self.variant = self._variants[key]
        if self._split:
            self._cache_first(anchors)

    def _cache_first(self, anchors: Sequence[StateDict]) -> None:
        name = self.first.layer
        layer = self.work.get_submodule(name)
        pnames = [p for p, t in layer.named_parameters() if t is not None]
        tensors = [anchors[a][f"{name}.{p}"] for a in range(len(anchors)) for p in pnames]
        if self._cache_key is not None and len(self._cache_key) == len(tensors) and all(
                torch.equal(c, t.to(c.device)) for c, t in zip(self._cache_key, tensors)):
            return
        self._cache_key = [t.detach().clone() for t in tensors]

        def outputs(x: torch.Tensor, slices: list[slice]) -> list[torch.Tensor]:
            result = []
            for s in slices:
                z = self.first.pre(x[s])
                rows = []
                for sd in anchors:
                    params = {p: sd[f"{name}.{p}"].to(self.device) for p in pnames}
                    y = functional_call(layer, params, (z,))
                    # float32 even under bf16: the outputs are combined in float32 per point
                    rows.append(_physical(y, self.channels_last).float())
                result.append((torch.stack(rows), y.shape))
            return result

        with torch.no_grad():
            self._first_eval = outputs(self.x, self.eval_slices)
            self._first_bn = outputs(self.bn_x, self.bn_calls) if self.recompute else []

    def _combined_first(self, c: torch.Tensor, cached: tuple[torch.Tensor, torch.Size]) -> torch.Tensor:
        stack, shape = cached
        with no_autocast(self.device):
            out = c @ stack
        out = out.to(torch.get_autocast_dtype(self.device.type)) if torch.is_autocast_enabled(
            self.device.type) else out
        if self.channels_last and len(shape) == 4:
            n, ch, h, w = shape
            return out.view(n, h, w, ch).permute(0, 3, 1, 2)
        return out.view(shape)

    def _call(self, fn, x: torch.Tensor, i: int, cache: list) -> torch.Tensor:
        if self._split:
            return fn(x, first_out=self._combined_first(self._c, cache[i]))
        return fn(x)

    def _recompute(self, v: _Variant) -> None:
        """Re-estimate the BN running statistics at the current point."""
        if v.stats is None:  # one train-mode forward per statistics batch
            begin_recompute(self.bns)
            for i, s in enumerate(self.bn_calls):  # a call holds whole batches
                first = self._combined_first(self._c, self._first_bn[i]) if self._split else None
                for j in range(s.start, s.stop, self.bn_batch):
                    part = slice(j, min(j + self.bn_batch, s.stop))
                    if first is None:
                        v.stat_module(self.bn_x[part])
                    else:
                        v.stat_module(self.bn_x[part],
                                      first_out=first[part.start - s.start: part.stop - s.start])
            end_recompute(self.bns)
            return
        totals = None
        full = self.bn_calls[0].stop - self.bn_calls[0].start
        for i, s in enumerate(self.bn_calls[:1] if self.sample else self.bn_calls):
            # a call of another shape runs eager: no second compilation for a remainder
            fn = v.stats_fn if s.stop - s.start == full else v.stats
            totals = add_stats(totals, self._call(fn, self.bn_x[s], i, self._first_bn))
        apply_stats(self.bns, totals, len(self.bn_slices))

    def logits(self, coefficients: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(batch index, logits[1, B, ...])`` for the single point ``coefficients[0]``."""
        v = self.variant
        with torch.no_grad():
            self._c = c = coefficients[0]
            with no_autocast(self.device):  # weights combine in float32 under any precision
                torch.matmul(c.unsqueeze(0), self.matrix, out=self.flat.view(1, -1))
            if self.recompute:
                self._recompute(v)
            for layer, bn, new in v.folds:
                fold_into(layer.weight, layer.bias, bn, bn.running_mean, bn.running_var,
                          bn.weight, bn.bias, new.weight, new.bias)
            full = self.eval_slices[0].stop
            for i, s in enumerate(self.eval_slices[:1] if self.sample else self.eval_slices):
                # a shorter last batch runs eager: no second compilation for one batch
                fn = v.eval_fn if s.stop - s.start == full else v.eval_module
                out = self._call(fn, self.x[s], i, self._first_eval)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                yield i, out.unsqueeze(0)


class VmapRunner:
    """K points per pass: ``torch.vmap`` over ``functional_call`` with stacked weights."""

    def __init__(self, model: nn.Module, policy: str, device: torch.device, x: torch.Tensor,
                 bn_x: torch.Tensor | None, batch_size: int, bn_batch_size: int,
                 points_per_pass: int) -> None:
        self.policy, self.device, self.max_points = policy, device, points_per_pass
        self.eval_module = _internal_copy(model, device)
        bns = batchnorm_modules(self.eval_module)
        self.recompute = policy == "recompute" and bool(bns)
        self.batch_module = self.eval_module
        if bns and policy in ("batch", "recompute"):
            self.batch_module = copy.deepcopy(self.eval_module)
            use_batch_statistics(batchnorm_modules(self.batch_module))
        self.x, self.bn_x = x, bn_x
        self.eval_slices = batches(len(x), batch_size)
        self.bn_slices = batches(len(bn_x), bn_batch_size) if self.recompute else []
        # the statistics pass as one graph (lossurf.surface.statspass) under vmap: K points and
        # as many statistics batches as fill an evaluation batch per call; else recording hooks
        self.stats_module = None
        if self.recompute:
            gm = trace(self.eval_module)
            self.stats_module = None if gm is None else stats_graph(gm, bns, bn_batch_size,
                                                                    vmap=True)
        groups = max(1, batch_size // bn_batch_size) if self.stats_module is not None else 1
        self.bn_calls = call_slices(len(bn_x), bn_batch_size, groups) if self.recompute else []
        self.recorder = (StatsRecorder(batchnorm_modules(self.batch_module))
                         if self.recompute and self.stats_module is None else None)
        self.layout = _Layout(self.eval_module, combined_keys(self.eval_module, policy, dedupe=True), False)

    def prepare(self, anchors: Sequence[StateDict], share: bool, compile_: bool) -> None:
        """Load the anchors (sharing and compile are loop-strategy features, ignored here)."""
        self.matrix = self.layout.matrix(anchors, self.device)
        skip = set(self.layout.keys)
        _load_fixed(self.eval_module, anchors[0], skip)
        if self.batch_module is not self.eval_module:
            _load_fixed(self.batch_module, anchors[0], skip)

    def _stats(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each BN layer's running statistics at the K points: the mean over the statistics
        batches of their mean and unbiased variance (``[K, C]`` each)."""
        rec = self.recorder
        if rec is None:  # the statistics graph: several batches per call, summed over them
            def call(p: dict[str, torch.Tensor], xb: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return tuple(t.sum(0) for t in functional_call(self.stats_module, p, (xb,)))

            calls, names = self.bn_calls, list(batchnorm_modules(self.eval_module))
        else:  # recording hooks: one batch per call
            def call(p: dict[str, torch.Tensor], xb: torch.Tensor) -> tuple[torch.Tensor, ...]:
                rec.records.clear()
                functional_call(self.batch_module, p, (xb,))
                return tuple(rec.records)

            calls, names = self.bn_slices, rec.names
        total = None
        for s in calls:
            out = torch.vmap(call, in_dims=(0, None))(params, self.bn_x[s])
            total = list(out) if total is None else [t + o for t, o in zip(total, out)]
        n = len(self.bn_slices)
        return {f"{name}.{stat}": total[2 * j + i] / n for j, name in enumerate(names)
                for i, stat in enumerate(BN_STAT_NAMES)}

    def logits(self, coefficients: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(batch index, logits[K, B, ...])`` for the K points ``coefficients``."""
        with torch.no_grad():
            with no_autocast(self.device):  # weights combine in float32 under any precision
                flat = coefficients @ self.matrix
            params = {k: self.layout.view(flat, i) for i, k in enumerate(self.layout.keys)}
            module = self.eval_module
            if self.recompute:
                params.update(self._stats(params))
            elif self.policy == "batch":
                module = self.batch_module

            def run(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
                out = functional_call(module, p, (xb,))
                return out[0] if isinstance(out, (tuple, list)) else out

            for i, s in enumerate(self.eval_slices):
                yield i, torch.vmap(run, in_dims=(0, None))(params, self.x[s])
