"""The batched surface evaluator: loss, accuracy, functional distance at many weight vectors.

Every path and plane of the paper is an affine combination of a few anchor weight vectors, so
the evaluator only knows one form: point p is ``theta_p = sum_a c[p, a] * anchors[a]`` applied
to every floating-point parameter and buffer (BN running statistics follow the BN policy;
integer and non-persistent buffers are anchor 0's). The user's model is never mutated: the evaluator works on an internal copy.

Strategies (see :mod:`lossurf.surface.runners`): ``loop`` runs one point at a time on a rewritten
copy (channels-last, BN folded into convolutions, the first layer computed once per anchor,
optional ``torch.compile``): what wins on CPU, where vmap over conv weights becomes slow
grouped convolutions. ``vmap`` runs K points per pass (default 32), which removes the
launch-bound cost of small models on a GPU. ``auto`` decides once per grid (see
:mod:`lossurf.surface.strategy`): the loop on CPU; on CUDA by timing the loop and K = 16, 32,
64 on a few points when the grid (1,024+ points) repays it, else by rules on the model's
activation size; K is bounded by the device's free memory. ``time`` always times. Under
``recompute`` both strategies run the statistics pass as one graph per call (several
statistics batches, stopped at the last BN layer; :mod:`lossurf.surface.statspass`), the
loop compiled with its evaluation graph, vmap over K points.

Decisions are taken once per grid, not per chunk: :meth:`Evaluator.plan` (called by
:func:`~lossurf.surface.store.compute_surface` with the whole grid, or by the first
:meth:`Evaluator.evaluate`) fixes the strategy, K and compilation; every chunk reuses them,
also in Ray workers (the plan pickles, the prepared runners are rebuilt once per worker).
``precision`` (``fp32`` strict by default, ``tf32``, ``bf16``; see :mod:`lossurf.precision`)
applies to every forward pass.

The loss is cross-entropy unless the caller passes ``loss_fn`` (see :mod:`lossurf.objective`
for its contract); either way the runners and their fast paths produce the outputs, only the
reduction differs. Accuracy is reported for classification and language-model data; a
``regression`` task (floating-point targets) needs a ``loss_fn`` and reports the loss alone.

References:
    Im, Tao, Branson (2016), "An Empirical Analysis of Deep Network Loss Surfaces", eq. 4.1
    (functional distance) and appendix A.1 (interpolations).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from contextlib import nullcontext
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lossurf.data.base import seeded_subset
from lossurf.devices import api_device
from lossurf.errors import LossurfError
from lossurf.objective import LossFn, check_class_ids, user_loss_sum
from lossurf.precision import check_precision, precision_context
from lossurf.surface.batchnorm import BN_POLICIES, BNPolicy, batchnorm_modules
from lossurf.surface.fastpath import compiler_available
from lossurf.surface.layouts import nchw_layers
from lossurf.surface.runners import LoopRunner, VmapRunner
from lossurf.threads import (
    env_threads,
    load_average,
    machine_threads,
    torch_threads,
    usable_cores,
)
from lossurf.surface.strategy import (
    DEFAULT_K,
    Choice,
    candidates,
    memory_k,
    model_facts,
    rule_choice,
    timed_choice,
)

if TYPE_CHECKING:
    from lossurf.data.base import Dataset

__all__ = ["BNPolicy", "EvalData", "Evaluator", "STRATEGIES", "check_model"]

#: Evaluation strategies, with what each means.
STRATEGIES: dict[str, str] = {
    "auto": "loop on CPU; on CUDA timed on a few points (large grids) or by rules",
    "loop": "one point at a time on a rewritten, channels-last, optionally compiled copy",
    "vmap": "K points per pass with torch.vmap over functional_call",
    "time": "time the loop and K points per pass on a few points, keep the fastest",
}
TASKS = ("classification", "language_model", "regression")
#: Auto-compile on CPU when a call evaluates at least this many example-forwards (compilation
#: takes tens of seconds on two cores, so it must be amortised).
COMPILE_MIN_WORK = 400_000
#: ``auto`` times the candidates (on CUDA) only for grids of at least this many points, on
#: this many points per candidate: timing the loop and K = 16, 32, 64 costs about 240 points'
#: evaluations, at most a quarter of such a grid (smaller grids follow the rule).
TIME_MIN_POINTS, TIME_POINTS = 1024, 16
#: When the load rule and the usable cores disagree on the thread count (a loaded machine),
#: grids of at least this many points time each count (a warm-up and a timed pass each; the
#: loop times a sample of a point: one statistics call and one evaluation batch).
THREADS_TIME_MIN_POINTS = 8
#: Timing the memory format of each 2-D convolution (:mod:`lossurf.surface.layouts`), then a
#: sample of a point with and without the layers found faster in NCHW, costs about 20 forward
#: passes of one batch and two rebuilds of the loop; grids of at least this many evaluation
#: batches (points x batches per point) keep that under a tenth of their time, against a
#: measured 5-15 % less time per point for a VGG at width 0.5 and 25 % at width 1 (2 cores).
LAYOUTS_TIME_MIN_BATCHES = 256
#: The layers found faster in NCHW alone switch when a sample of a point takes at most this
#: share of its channels-last time with them (the check is against conversions that cost more
#: than the layers save: 1.4x on the digits CNN once; VGG's real gains are 0.75-0.9x).
SAMPLE_MARGIN = 0.95
#: CPU batch-size targets. A batch should hold about CPU_BATCH_VALUES values of its largest
#: activation, between CPU_BATCH and CPU_DENSE_BATCH examples: every batch pays a fixed cost
#: (per-layer calls, thread start-up) that dominates small activations, while large ones must
#: stay in cache. Measured on this 2-core CPU: VGG-BN on 32x32 (32k values per example) runs
#: best near 128; the digits CNN (1k values) ran 120 points/s at 128 and 250 at 1,438 (its
#: whole evaluation set); the 784-512-256 MLP over 10,000 inputs 30 points/s at 125 and 52 at
#: 2,000 (10,000: 30).
CPU_BATCH, CPU_DENSE_BATCH, CPU_BATCH_VALUES = 128, 2048, 1 << 21


@dataclass(frozen=True)
class EvalData:
    """What the evaluator runs on.

    Attributes:
        x: evaluation inputs (a subset already applied).
        y: targets: class ids ``[N]``, next-token ids ``[N, T]``, or real values of any shape
            ``[N, ...]`` for ``regression``.
        task: ``classification``, ``language_model`` or ``regression`` (the evaluator then
            needs a ``loss_fn``).
        bn_x: training inputs for re-estimating BN statistics (policy ``recompute``).

    Floating-point ``x`` and ``bn_x`` of another dtype than the model's (float64 from numpy,
    typically) are cast to the model's dtype by the :class:`Evaluator`, which records it in
    its ``notes``; integer inputs are never cast (ids stay ids, pixels need scaling).
    """

    x: torch.Tensor
    y: torch.Tensor
    task: Literal["classification", "language_model", "regression"]
    bn_x: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise LossurfError(f"unknown task {self.task!r}; use one of: {', '.join(TASKS)}")
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise LossurfError("EvalData needs tensors x and y; convert them with torch.as_tensor")
        if self.bn_x is not None:
            if not isinstance(self.bn_x, torch.Tensor):
                raise LossurfError(f"EvalData bn_x is a {type(self.bn_x).__name__}, not a tensor; "
                                   "convert it with torch.as_tensor")
            if self.bn_x.shape[1:] != self.x.shape[1:]:
                raise LossurfError(
                    f"EvalData bn_x holds examples of shape {tuple(self.bn_x.shape[1:])}, x of "
                    f"{tuple(self.x.shape[1:])}; pass training inputs of the model's input shape")
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise LossurfError(f"EvalData has {len(self.x)} inputs and {len(self.y)} targets; "
                               "pass the same, non-zero number of each")
        if self.task != "regression":
            _check_ids(self.y, self.task)

    @classmethod
    def from_dataset(cls, dataset: Dataset, split: Literal["train", "test"] = "train",
                     subset: int | None = None, seed: int = 0, bn_examples: int = 1024) -> EvalData:
        """Evaluation data from a :class:`~lossurf.data.Dataset`.

        Args:
            dataset: the data set.
            split: which split to evaluate on (default ``train``).
            subset: evaluate on a fixed seeded subset of this many examples (default: all).
            seed: seed of the subsets (default 0).
            bn_examples: training examples for re-estimating BN statistics, a fixed seeded
                subset (default 1024; 0 for none).
        """
        if split not in ("train", "test"):
            raise LossurfError(f"unknown split {split!r}; use 'train' or 'test'")
        x, y = (dataset.train_x, dataset.train_y) if split == "train" else (dataset.test_x, dataset.test_y)
        idx = seeded_subset(len(x), subset, seed)
        bn_x = None
        if bn_examples > 0:
            bn_x = dataset.train_x[seeded_subset(len(dataset.train_x), bn_examples, seed)]
        return cls(x[idx], y[idx], dataset.task, bn_x)


def _check_ids(y: torch.Tensor, task: str) -> None:
    """Class or token ids the cross-entropy can take: integer (not bool, not 8/16-bit)."""
    if y.is_floating_point():
        if task == "classification" and y.dim() == 2 and y.shape[1] > 1:
            raise LossurfError(
                f"EvalData targets have shape {tuple(y.shape)} ({y.dtype}): one-hot or "
                "probability targets; classification takes class ids [N]: convert them with "
                "y.argmax(1), or use task='regression' and a loss_fn")
        raise LossurfError(f"EvalData targets are {y.dtype}; {task} takes integer class or "
                           "token ids: convert them with y.long(), or use task='regression' "
                           "and a loss_fn")
    if y.dtype not in (torch.int64, torch.int32):
        raise LossurfError(f"EvalData targets are {y.dtype}; {task} takes int64 class or token "
                           "ids: convert them with y.long()")


def check_model(model: object) -> None:
    """Refuse anything but an ``nn.Module`` where the model goes (a state dict, typically)."""
    if not isinstance(model, nn.Module):
        hint = (" (a state dict?): the model comes first, then the weights, e.g. "
                "line(model, start_state, end_state, data)") if isinstance(model, Mapping) else ""
        raise LossurfError(f"model must be an nn.Module, got a {type(model).__name__}{hint}; "
                           "pass the network (its architecture; the weights are set per point)")


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (else buffer); None if it has none."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module (in registration order) that holds parameters itself."""
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            return name or type(m).__name__, m
    return None


def _describe_layer(name: str, m: nn.Module) -> str:
    """What the layer takes, as a user reads it."""
    kind = type(m).__name__
    if isinstance(m, nn.Linear):
        return f"{name} ({kind}) expects {m.in_features} features: inputs [N, ..., {m.in_features}]"
    if isinstance(m, nn.modules.conv._ConvNd):
        dims = {1: "L", 2: "H, W", 3: "D, H, W"}.get(len(m.kernel_size), "...")
        return (f"{name} ({kind}) expects {m.in_channels} input channels: inputs "
                f"[N, {m.in_channels}, {dims}]")
    if isinstance(m, nn.Embedding):
        return f"{name} ({kind}) expects integer ids from 0 to {m.num_embeddings - 1}"
    return f"{name} ({kind})"


def _check_state(sd: object, what: str, shapes: dict[str, torch.Size]) -> None:
    if not isinstance(sd, Mapping):
        raise LossurfError(f"{what} is a {type(sd).__name__}, not a state dict; pass model.state_dict()")
    missing = [k for k in shapes if k not in sd]
    extra = [k for k in sd if k not in shapes]
    if missing or extra:
        raise LossurfError(
            f"{what} does not match the model's architecture (missing keys: {missing[:5]}, "
            f"unexpected keys: {extra[:5]}); pass weights saved from the same architecture")
    for k, shape in shapes.items():
        t = sd[k]
        if not isinstance(t, torch.Tensor) or t.shape != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise LossurfError(f"{what}[{k!r}] has shape {got}, the model's has {tuple(shape)}; "
                               "pass weights saved from the same architecture")


def _batch_sums(logits: torch.Tensor, y: torch.Tensor, ref: tuple | None) -> torch.Tensor:
    """``[K, 4]`` float64 sums over the batch: loss, correct, squared distance, disagreements."""
    k, v = logits.shape[0], logits.shape[-1]
    flat = logits.reshape(k, -1, v).float()
    target = y.reshape(1, -1, 1).expand(k, -1, 1)
    # cross-entropy as logsumexp - picked logit, from one max over classes that also gives the
    # prediction (its ties resolve to the first index, as argmax's): on CPU with 10 classes
    # this is 3-4x faster than log_softmax + argmax, which vectorise poorly over 10 values
    top, pred = flat.max(-1)
    lse = (flat - top.unsqueeze(-1)).exp_().sum(-1).log_().add_(top)
    out = torch.zeros(k, 4, dtype=torch.float64, device=logits.device)
    out[:, 0] = (lse - flat.gather(2, target).squeeze(-1)).sum(1, dtype=torch.float64)
    out[:, 1] = (pred == y.reshape(1, -1)).sum(1)
    if ref is not None:
        probs, ref_pred = ref
        p = (flat - lse.unsqueeze(-1)).exp_()
        out[:, 2] = (p - probs).square().sum(-1).sum(1, dtype=torch.float64)
        out[:, 3] = (pred != ref_pred).sum(1)
    return out


class Evaluator:
    """Loss and accuracy of one model at many weight vectors (affine combinations of anchors).

    Args:
        model: the network; never mutated (an internal copy is evaluated).
        data: the evaluation data.
        bn: BN policy, ``recompute`` (default), ``interpolate`` or ``batch``.
        device: where to evaluate (default: the model's device); the data stay there.
        strategy: ``auto`` (default), ``loop`` or ``vmap``.
        points_per_pass: K for ``vmap`` (default 32, fewer where K points' activations would
            not fit in a quarter of the device's free memory).
        batch_size: evaluation batch size (default on CPU: enough examples for about 2M
            values of the largest activation, between 128 and 2048, near 2048 for a network of
            only dense layers, 128 when BN uses batch statistics; 1024 on CUDA).
        compile: ``torch.compile`` the loop's forward (default: when it pays off on CPU).
        bn_batch_size: batch size of the BN statistics passes (default 128); it is part of the
            ``recompute`` definition, not a tuning knob.
        share_first_layer: compute the first layer once per anchor (default: when it pays off).
        fold_bn: fold eval-mode BN into the preceding layer (default True).
        channels_last: channels-last layout for image inputs (default on CPU: channels-last,
            except the 2-D convolutions that time faster in NCHW, decided per grid; see
            :mod:`lossurf.surface.layouts`). True: channels-last throughout.
        loss_fn: ``loss_fn(outputs, targets) -> mean loss over the batch`` (default None:
            cross-entropy); required for ``regression`` data.
        precision: ``fp32`` (default: float32, TF32 off), ``tf32`` or ``bf16`` (autocast);
            see :mod:`lossurf.precision`.
        threads: CPU threads (default: planned per grid, see :mod:`lossurf.threads`; the
            count is applied in the planning process, a Ray worker keeps its own).
    """

    def __init__(self, model: nn.Module, data: EvalData, *, bn: BNPolicy = "recompute",
                 device: str | torch.device | None = None,
                 strategy: Literal["auto", "loop", "vmap", "time"] = "auto",
                 points_per_pass: int | None = None, batch_size: int | None = None,
                 compile: bool | None = None, bn_batch_size: int = 128,
                 share_first_layer: bool | None = None, fold_bn: bool = True,
                 channels_last: bool | None = None, loss_fn: LossFn | None = None,
                 precision: str = "fp32", threads: int | None = None) -> None:
        check_model(model)
        if bn not in BN_POLICIES:
            raise LossurfError(f"unknown BN policy {bn!r}; use one of: {', '.join(BN_POLICIES)}")
        if strategy not in STRATEGIES:
            raise LossurfError(f"unknown strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
        if not isinstance(data, EvalData):
            raise LossurfError("data must be an EvalData; build it with EvalData(x, y, task) "
                               "or EvalData.from_dataset(dataset)")
        counts = {}
        for name, value in (("points_per_pass", points_per_pass), ("batch_size", batch_size),
                            ("bn_batch_size", bn_batch_size), ("threads", threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)) or value < 1):
                raise LossurfError(f"{name} must be a positive integer, got {value!r}")
            counts[name] = None if value is None else int(value)  # numpy integers too
        points_per_pass, batch_size = counts["points_per_pass"], counts["batch_size"]
        bn_batch_size, threads = counts["bn_batch_size"], counts["threads"]
        if loss_fn is not None and not callable(loss_fn):
            raise LossurfError(f"loss_fn is a {type(loss_fn).__name__}, not a callable; pass a "
                               "function (outputs, targets) -> mean loss")
        if data.task == "regression" and loss_fn is None:
            raise LossurfError("regression data (floating-point targets) need a loss: pass "
                               "loss_fn=, e.g. torch.nn.functional.mse_loss")
        self.loss_fn = loss_fn
        self.precision = check_precision(precision)
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = api_device(device)
        self.bn, self.task, self.compile = bn, data.task, compile
        self.requested_strategy = strategy
        self.strategy = strategy if strategy in ("loop", "vmap") else None  # None: not planned
        self.choice: Choice | None = None
        self._compile_plan: bool | None = None
        self.threads, self._threads_given, self.threads_reason = threads, threads, ""
        self._plan_pid = 0
        self._shapes = {k: t.shape for k, t in model.state_dict().items()}
        has_bn = bool(batchnorm_modules(model))
        if bn == "recompute" and has_bn and (data.bn_x is None or len(data.bn_x) == 0):
            raise LossurfError("BN policy 'recompute' needs training inputs: pass EvalData(bn_x=...) "
                               "(EvalData.from_dataset sets it) or use bn='interpolate'")
        #: What the evaluator changed in the data (floating inputs cast to the model's dtype).
        self.notes: list[str] = []
        dtype = _model_dtype(model)
        self.x = self._as_model_dtype(data.x, "x", dtype).to(self.device)
        self.y = data.y.to(self.device)
        self.bn_x = None if data.bn_x is None else self._as_model_dtype(
            data.bn_x, "bn_x", dtype).to(self.device)
        self._trial_forward(model)
        cpu = self.device.type == "cpu"
        # batch statistics depend on the batches, so under 'batch' they keep the usual size
        batch_statistics = bn == "batch" and has_bn
        dense = not any(isinstance(m, _NOT_DENSE) for m in model.modules()) and not batch_statistics
        target = CPU_DENSE_BATCH if dense else CPU_BATCH
        if cpu and batch_size is None and not dense and not batch_statistics:
            # facts from a CPU copy: the user's model is never run or mutated
            largest = model_facts(copy.deepcopy(model).cpu(), self.x[:1].cpu()).largest
            if largest:
                target = min(CPU_DENSE_BATCH, max(CPU_BATCH, CPU_BATCH_VALUES // largest))
        self.batch_size = batch_size or (_near_divisor(len(self.x), target) if cpu else 1024)
        self.bn_batch_size = bn_batch_size
        self._k_given = points_per_pass is not None
        self.points_per_pass = points_per_pass or DEFAULT_K
        self.share_first_layer, self.fold_bn = share_first_layer, fold_bn
        self.channels_last = cpu if channels_last is None else channels_last
        self._layouts_auto = channels_last is None and cpu
        self._nchw: frozenset[str] = frozenset()  # 2-D convolutions the loop runs in NCHW
        self.layouts_reason = ""
        self._has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        self._has_conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self._model = model
        self._runners: dict[str, LoopRunner | VmapRunner] = {}

    def _trial_forward(self, model: nn.Module) -> None:
        """One forward of two examples on an eval-mode copy, before anything is planned or
        built: the outputs must suit the task, and class ids the model's outputs."""
        work = copy.deepcopy(model).to(self.device).eval()
        try:
            with torch.no_grad():
                out = work(self.x[:2])
        except LossurfError:
            raise
        except (RuntimeError, IndexError, ValueError, TypeError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            x = self.x
            first = _first_layer(model)
            if (not x.is_floating_point() and _model_dtype(model) is not None
                    and not isinstance(first[1] if first else None, nn.Embedding)):
                fix = "convert x with x.float() (scaled as the model was trained)"
            else:
                fix = "pass inputs of the shape and type the model was built for"
            expects = f"; its first layer {_describe_layer(*first)}" if first else ""
            raise LossurfError(
                f"the model cannot run on x of shape {tuple(x.shape)} ({x.dtype}){expects}; "
                f"{fix} (the forward pass failed: {type(exc).__name__}: {reason})") from exc
        if isinstance(out, (tuple, list)) and out:  # the runners keep the first output
            out = out[0]
        need = {"classification": "logits [N, classes]",
                "language_model": "logits [N, T, vocabulary]",
                "regression": "a tensor [N, ...] for loss_fn"}[self.task]
        if not isinstance(out, torch.Tensor):
            raise LossurfError(
                f"the model returns a {type(out).__name__}; the evaluator needs {need}: wrap the "
                "model so that forward returns that tensor (e.g. model(x)['logits'])")
        if self.task != "regression":
            if out.dim() < 2 or (self.task == "language_model" and out.dim() < 3):
                raise LossurfError(
                    f"the model returns outputs of shape {tuple(out.shape)} for "
                    f"{len(self.x[:2])} examples; "
                    f"{self.task} needs {need}: return the logits, or for a real-valued output "
                    "use task='regression' with a loss_fn")
            check_class_ids(self.y, out)

    def _as_model_dtype(self, t: torch.Tensor, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        """Floating inputs in the model's floating dtype (float64 from numpy, typically)."""
        if dtype is None or not t.is_floating_point() or t.dtype == dtype:
            return t
        self.notes.append(f"{name} converted from {t.dtype} to the model's {dtype}")
        return t.to(dtype)

    def _runner(self, strategy: str) -> LoopRunner | VmapRunner:
        if strategy not in self._runners:
            args = (self._model, self.bn, self.device, self.x, self.bn_x, self.batch_size,
                    self.bn_batch_size)
            if strategy == "loop":
                self._runners[strategy] = LoopRunner(*args, channels_last=self.channels_last,
                                                     fold_bn=self.fold_bn, nchw=self._nchw)
            else:
                self._runners[strategy] = VmapRunner(*args, self.points_per_pass)
        runner = self._runners[strategy]
        if strategy == "vmap":
            runner.max_points = self.points_per_pass
        return runner

    def __getstate__(self) -> dict:
        # Runners hold rewritten (fx) and compiled modules that do not pickle; a copy shipped
        # to a worker (Ray) rebuilds them on first use.
        state = self.__dict__.copy()
        state["_runners"] = {}
        return state

    @property
    def provenance(self) -> dict[str, object]:
        """What the plan decided, for the surface's attrs (empty before :meth:`plan`)."""
        if self.choice is None:
            return {"precision": self.precision}
        return {"precision": self.precision, "strategy": self.choice.strategy,
                "strategy_k": self.choice.k, "strategy_reason": self.choice.reason,
                "compile": bool(self._compile_plan), "batch_size": self.batch_size,
                "threads": self.threads or 0, "threads_reason": self.threads_reason,
                "nchw_layers": sorted(self._nchw), "layouts_reason": self.layouts_reason}

    def plan(self, anchors: Sequence[Mapping[str, torch.Tensor]],
             coefficients: torch.Tensor | np.ndarray,
             previous: Mapping[str, object] | None = None) -> dict[str, object]:
        """Decide, once for a grid of these points, the strategy (and K), compilation and the
        CPU thread count.

        Called by :func:`~lossurf.surface.store.compute_surface` with the whole grid before
        its chunks run (else by the first :meth:`evaluate`); later calls keep the plan.
        ``previous`` is the attrs of the store being resumed: its decisions are reused (unless
        this evaluator was given others), so that a resumed grid is computed as it began.

        Returns:
            :attr:`provenance`.
        """
        if self.choice is not None:
            return self.provenance
        c = self._coefficients(coefficients, len(anchors))
        previous = previous or {}
        resumed = (self.requested_strategy == "auto" and previous.get("strategy") in ("loop", "vmap")
                   and isinstance(previous.get("strategy_k"), int))
        self._compile_plan = (bool(previous["compile"]) if resumed and self.compile is None
                              and isinstance(previous.get("compile"), bool)
                              else self._want_compile(len(c)))
        if resumed:
            self.choice = Choice(str(previous["strategy"]), int(previous["strategy_k"]),
                                 f"resumed: {previous.get('strategy_reason', '')}")
        elif self.requested_strategy in ("loop", "vmap"):
            k = 1 if self.strategy == "loop" else self.points_per_pass
            self.choice = Choice(self.strategy, k, "requested")
        else:
            # facts from a CPU copy: the user's model is never run or mutated
            facts = None if self.device.type == "cpu" else model_facts(
                copy.deepcopy(self._model).cpu(), self.x[:1].cpu())
            free = (torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda"
                    else None)
            if self.requested_strategy == "time" or (
                    self.device.type == "cuda" and len(c) >= TIME_MIN_POINTS):
                largest = memory_k(facts, self.batch_size, free, 2 * self.points_per_pass)
                self.choice = self._timed(anchors, c, largest)
            else:
                k = memory_k(facts, self.batch_size, free, self.points_per_pass)
                self.choice = rule_choice(facts, self.device, k) if k > 1 else Choice(
                    "loop", 1, f"rule: {self.points_per_pass} points per pass do not fit in "
                               "the device's free memory")
        self.strategy = self.choice.strategy
        if self.choice.strategy == "vmap":
            self.points_per_pass = self.choice.k
        self._plan_threads(anchors, c, previous.get("threads"))
        self._plan_layouts(anchors, c, previous)
        return self.provenance

    def _plan_layouts(self, anchors, c: torch.Tensor, previous: Mapping[str, object]) -> None:
        """Which 2-D convolutions the CPU loop runs in NCHW: the resumed store's, none, or
        those that time faster in NCHW alone (:mod:`.layouts`) when a sample of a point then
        also runs faster with them in NCHW (a layout change has costs beyond the layer)."""
        points = len(c)
        chosen: frozenset[str] = frozenset()
        recorded = previous.get("nchw_layers")
        if isinstance(recorded, (list, tuple)) and all(isinstance(n, str) for n in recorded):
            chosen, reason = frozenset(recorded), "resumed"
        elif "strategy" in previous:  # a store begun before layouts were timed
            reason = "resumed: channels-last throughout"
        elif not self._layouts_auto:
            reason = "requested" if self.device.type == "cpu" else "not a CPU"
        elif self.strategy != "loop" or not self._has_conv2d or self.x.dim() != 4:
            reason = "not timed: the loop runs no 2-D convolution on images"
        elif env_threads() is not None:
            # LOSSURF_THREADS asks for reproducible results; a timed layout is not
            reason = "LOSSURF_THREADS: channels-last throughout"
        elif points * -(-len(self.x) // self.batch_size) < LAYOUTS_TIME_MIN_BATCHES:
            reason = f"not timed: a grid of fewer than {LAYOUTS_TIME_MIN_BATCHES} batches"
        else:
            with torch_threads(self.threads or torch.get_num_threads()):
                faster = frozenset(nchw_layers(self._model, self.x[: self.batch_size]))
                chosen, reason = self._verified_layouts(anchors, c[:1], faster)
        self.layouts_reason = reason
        self._use_layouts(chosen)

    def _use_layouts(self, nchw: frozenset[str]) -> None:
        """Run the layers ``nchw`` in NCHW from now on (the loop is rebuilt on first use)."""
        if nchw != self._nchw:
            self._nchw = nchw
            self._runners.pop("loop", None)

    def _plan_threads(self, anchors, c: torch.Tensor, previous: object) -> None:
        """The thread count for the grid: given, ``LOSSURF_THREADS``, the resumed store's, the
        load rule, or timed when the rule and the usable cores differ."""
        self._plan_pid = os.getpid()
        if self.device.type != "cpu":
            self.threads, self.threads_reason = None, "not a CPU"
            return
        if self._threads_given is not None:
            self.threads, self.threads_reason = self._threads_given, "requested"
            return
        fixed = env_threads()
        if fixed is not None:
            self.threads, self.threads_reason = fixed, "LOSSURF_THREADS"
            return
        if isinstance(previous, int) and not isinstance(previous, bool) and previous >= 1:
            self.threads, self.threads_reason = previous, "resumed"
            return
        usable, guess, load = usable_cores(), machine_threads(), load_average()
        rule = f"rule: {usable} usable cores, load {load if load is not None else 'unknown'}"
        if guess == usable or len(c) < THREADS_TIME_MIN_POINTS:
            self.threads, self.threads_reason = guess, rule
            return
        block = c[: self.choice.k]
        timings = {}
        for n in (guess, usable):
            with torch_threads(n):
                self._sample_pass(anchors, block)  # warm-up: preparation, allocation
                timings[n] = self._sample_pass(anchors, block)
        self.threads = min(timings, key=timings.get)
        self.threads_reason = f"timed ({rule}): " + ", ".join(
            f"{n} threads {t:.3g} s/pass" for n, t in timings.items())

    def _verified_layouts(self, anchors, block: torch.Tensor,
                          faster: frozenset[str]) -> tuple[frozenset[str], str]:
        """``faster`` (layers faster in NCHW alone) if a sample of a point runs faster with
        them in NCHW than with none, by :data:`SAMPLE_MARGIN`; else none."""
        if not faster:
            return faster, "timed: every 2-D convolution is as fast channels-last"
        timings: dict[frozenset[str], float] = {}
        for _ in range(3):  # interleaved, so that a burst of load hits both
            for option in (frozenset(), faster):
                self._use_layouts(option)
                if option not in timings:
                    self._sample_pass(anchors, block)  # warm-up: preparation, allocation
                seconds = self._sample_pass(anchors, block)
                timings[option] = min(timings.get(option, seconds), seconds)
        self._use_layouts(frozenset())
        ratio = timings[faster] / timings[frozenset()]
        keep = ratio <= SAMPLE_MARGIN
        return (faster if keep else frozenset(),
                f"timed: {len(faster)} 2-D convolutions faster in NCHW alone; a sample of a "
                f"point took {ratio:.2f}x the time with them in NCHW"
                + ("" if keep else ", not enough to switch"))

    def _sample_pass(self, anchors, block: torch.Tensor) -> float:
        """Seconds of one pass of the planned strategy over ``block``, eager; the loop runs a
        sample of the point (one statistics call and one evaluation batch)."""
        runner = self._runner(self.strategy)
        # eager: torch.compile guards on the thread count (and the layouts), so timing a
        # compiled forward at a second setting would time a recompilation
        runner.sample = isinstance(runner, LoopRunner)
        try:
            start = clock()
            with precision_context(self.precision, self.device):
                self._evaluate_with(self.strategy, anchors, block, False, None, None)
            return clock() - start
        finally:
            runner.sample = False

    def _timed(self, anchors, c: torch.Tensor, largest_k: int | None = None) -> Choice:
        options, k = candidates(self.points_per_pass, largest_k), self.points_per_pass
        if self._k_given:
            options = [o for o in options if o.strategy == "loop" or o.k == self.points_per_pass]

        def run(option: Choice, n: int) -> None:
            self.points_per_pass = option.k if option.strategy == "vmap" else self.points_per_pass
            rows = torch.arange(n, device=c.device) % len(c)
            with precision_context(self.precision, self.device):
                self._evaluate_with(option.strategy, anchors, c[rows], self._compile_plan,
                                    None, None)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

        try:
            return timed_choice(options, run, TIME_POINTS, clock)
        finally:
            self.points_per_pass = k

    def _coefficients(self, coefficients, num_anchors: int) -> torch.Tensor:
        c = np.asarray(coefficients.detach().cpu() if isinstance(coefficients, torch.Tensor)
                       else coefficients, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != num_anchors or c.shape[0] == 0:
            raise LossurfError(f"coefficients have shape {c.shape}; pass an array of shape "
                               f"[points, {num_anchors}] (one weight per anchor)")
        if not np.isfinite(c).all():
            raise LossurfError("coefficients contain NaN or Inf; pass finite values")
        return torch.as_tensor(c, dtype=torch.float32, device=self.device)

    def _want_compile(self, points: int) -> bool:
        if self.compile is not None:
            return self.compile
        work = points * (len(self.x) + (len(self.bn_x) if self.bn_x is not None else 0))
        return (self.device.type == "cpu" and self._has_conv and compiler_available()
                and work >= COMPILE_MIN_WORK)

    def _run(self, runner, anchors, coeffs, share, compile_, ref, progress):
        runner.prepare(anchors, share, compile_)
        sums = torch.zeros(len(coeffs), 4, dtype=torch.float64, device=self.device)
        slices = runner.eval_slices
        for start in range(0, len(coeffs), runner.max_points):
            block = coeffs[start: start + runner.max_points]
            for i, logits in runner.logits(block):
                r = None if ref is None else ref[i]
                sums[start: start + len(block)] += self._sums(logits, self.y[slices[i]], r)
            if progress is not None:
                progress(len(block))
        return sums

    def _sums(self, outputs: torch.Tensor, y: torch.Tensor, ref: tuple | None) -> torch.Tensor:
        """``[K, 4]`` sums of one batch at K points: the default cross-entropy path, or the
        user's loss (one call per point) with accuracy where the task has classes."""
        if self.loss_fn is None:
            return _batch_sums(outputs, y, ref)
        if self.task == "regression":
            out = torch.zeros(len(outputs), 4, dtype=torch.float64, device=outputs.device)
        else:
            out = _batch_sums(outputs, y, ref)
        for k in range(len(outputs)):
            o = outputs[k].float() if outputs.is_floating_point() else outputs[k]
            out[k, 0] = user_loss_sum(self.loss_fn, o, y)
        return out

    def _reference(self, runner, reference) -> list[tuple[torch.Tensor, torch.Tensor]]:
        runner.prepare([reference], False, False)
        one = torch.ones(1, 1, device=self.device)
        ref = []
        with torch.no_grad():
            for _, logits in runner.logits(one):
                flat = logits[0].reshape(-1, logits.shape[-1]).float()
                ref.append((F.softmax(flat, dim=-1), flat.argmax(-1)))
        return ref

    def evaluate(self, anchors: Sequence[Mapping[str, torch.Tensor]],
                 coefficients: torch.Tensor | np.ndarray,
                 reference: Mapping[str, torch.Tensor] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Metrics at the points ``theta_p = sum_a coefficients[p, a] * anchors[a]``.

        Args:
            anchors: A state dicts of the model's architecture.
            coefficients: ``[P, A]`` affine weights of the anchors.
            reference: a state dict; adds ``fdist`` (eq. 4.1) and ``disagreement`` to it.
            progress: called with the number of points just finished.

        Returns:
            float64 arrays of length P: ``loss``, ``accuracy`` (not for regression; also
            ``perplexity`` for language models under cross-entropy) and, with a reference,
            ``fdist`` and ``disagreement``.
        """
        if isinstance(anchors, Mapping) or not isinstance(anchors, Sequence) or len(anchors) == 0:
            raise LossurfError("anchors must be a non-empty list of state dicts; "
                               "wrap a single one as [state_dict]")
        for a, sd in enumerate(anchors):
            _check_state(sd, f"anchors[{a}]", self._shapes)
        if reference is not None:
            _check_state(reference, "reference", self._shapes)
            if self.task == "regression":
                raise LossurfError("functional distance compares predicted class probabilities "
                                   "(paper eq. 4.1); it needs classification or language-model "
                                   "data, not regression")
        coeffs = self._coefficients(coefficients, len(anchors))
        self.plan(anchors, coeffs)
        compile_ = bool(self._compile_plan)
        strategy = self.strategy
        # the planned count, in the planning process only: a Ray worker keeps its slot's count
        here = self.threads is not None and os.getpid() == self._plan_pid
        with torch_threads(self.threads) if here else nullcontext(), \
                precision_context(self.precision, self.device):
            try:
                sums = self._evaluate_with(strategy, anchors, coeffs, compile_, reference, progress)
            except LossurfError:
                raise
            except Exception as exc:
                if not (self.requested_strategy in ("auto", "time") and strategy == "vmap"):
                    raise
                warnings.warn(f"vmap evaluation failed ({type(exc).__name__}: {exc}); using the "
                              "loop strategy", RuntimeWarning, stacklevel=2)
                self.strategy = "loop"
                self.choice = Choice("loop", 1, f"vmap failed ({type(exc).__name__}); loop")
                sums = self._evaluate_with("loop", anchors, coeffs, compile_, reference, progress)
        sums = sums.cpu().numpy()
        count = self.y.numel()
        # cross-entropy is summed per prediction (token); a user's loss per example
        loss_count = count if self.loss_fn is None else len(self.y)
        result = {"loss": sums[:, 0] / loss_count}
        if self.task != "regression":
            result["accuracy"] = sums[:, 1] / count
        if self.task == "language_model" and self.loss_fn is None:
            result["perplexity"] = np.exp(result["loss"])
        if reference is not None:
            result["fdist"] = np.sqrt(sums[:, 2] / count)
            result["disagreement"] = sums[:, 3] / count
        return result

    def _evaluate_with(self, strategy, anchors, coeffs, compile_, reference, progress):
        runner = self._runner(strategy)
        ref = None if reference is None else self._reference(runner, reference)
        share = False
        if isinstance(runner, LoopRunner):
            share = (runner.should_share(len(anchors)) if self.share_first_layer is None
                     else self.share_first_layer)
        return self._run(runner, anchors, coeffs, share, compile_, ref, progress)


#: The strategy timer's clock (a module attribute so that tests can fake timings).
clock = time.perf_counter

#: Layers whose activations make large CPU batches costly (images, sequences).
_NOT_DENSE = (nn.modules.conv._ConvNd, nn.RNNBase, nn.Embedding, nn.MultiheadAttention)


def _near_divisor(n: int, target: int) -> int:
    """A batch size near ``target`` that splits ``n`` evenly if one is close (so a compiled
    forward sees one shape), else ``target``."""
    if n <= target + target // 4:
        return n
    for delta in range(0, target // 4 + 1):
        for b in (target + delta, target - delta):
            if n % b == 0:
                return b
    return target
