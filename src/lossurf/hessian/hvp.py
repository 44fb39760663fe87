"""Hessian-vector products of the mean loss over a fixed data subset.

:class:`HessianOperator` wraps a model at one weight vector: ``loss()``, ``gradient()`` and
``hvp(v)`` of the training objective (:func:`lossurf.objective.mean_loss`) averaged over every
example of an :class:`~lossurf.surface.evaluate.EvalData`. Batches are accumulated exactly: each
batch contributes its *summed* loss, and the total is divided once by the number of targets, so
the result does not depend on the batch size.

The network runs in eval mode: batch norm uses the end point's running statistics (the function
that was trained to, not one of its minibatches) and dropout is off, so the loss is a fixed,
smooth function of the parameters and its Hessian is symmetric. Only parameters move; buffers
(BN statistics) stay those of ``weights``.

Two implementations of the product, chosen with ``method``:

- ``forward-over-reverse``: ``torch.func.jvp`` of ``torch.func.grad`` (one forward pass carrying
  tangents, one backward pass carrying tangents);
- ``double-backward``: ``autograd.grad`` with ``create_graph=True``, then the gradient of
  ``<grad, v>`` (Pearlmutter's trick, as PyHessian does). When the whole subset is one batch
  (or ``cache_graph=True``) the graph of the gradient is built once and kept, so every later
  product is a single backward pass through it, with no forward pass.

``auto`` picks the one that measured faster here (``benchmarks/hessian.py``; see
:data:`DEFAULT_METHOD`). Vectors in and out are flat float64 CPU/device tensors so that Lanczos
can keep its basis in float64 whatever the model's precision.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from lossurf.devices import api_device
from lossurf.errors import LossurfError
from lossurf.objective import check_class_ids, mean_loss
from lossurf.params import as_state, check_compatible, check_finite_weights

__all__ = ["HessianOperator", "HVP_METHODS", "DEFAULT_METHOD"]

HVP_METHODS = ("auto", "forward-over-reverse", "double-backward")
#: What ``auto`` means. Measured by benchmarks/hessian.py on the digits CNN with batch norm (6,138
#: parameters, 512 examples, one thread of a shared, loaded 2-core CPU; three runs): one HVP costs
#: 2.7-3.6 gradients by double backward, 2.7-5.0 by forward-over-reverse, and 1.2-1.8 by double
#: backward reusing the gradient's graph (the default on a one-batch subset).
DEFAULT_METHOD = "double-backward"
#: Examples per batch by default: large enough to amortise per-call overhead, small enough that
#: a forward-over-reverse pass of a CIFAR-sized network fits in memory.
DEFAULT_BATCH = 512


class HessianOperator:
    """Loss, gradient and Hessian-vector products of ``model`` at ``weights`` on ``data``.

    Args:
        model: the architecture (never modified: a copy is used).
        weights: the state dict to differentiate at (parameters and BN statistics).
        data: the examples; the loss is their mean (per token for language models).
        batch_size: examples per pass (default 512); the result does not depend on it.
        method: ``auto`` (default), ``forward-over-reverse`` or ``double-backward``.
        device: where to compute (default: the model's device).
        cache_graph: double backward only: build the gradient's graph once and keep it for
            every product (default: when the subset is a single batch). It holds every batch's
            activations twice over, so leave it off for large subsets of large models.

    Attributes:
        names: the parameters differentiated, in ``named_parameters`` order.
        n: their total number of entries (the Hessian is ``n x n``).
        theta: the parameters at ``weights`` as one float64 vector.
        calls: number of Hessian-vector products computed so far.
    """

    def __init__(self, model: nn.Module, weights: Mapping[str, torch.Tensor], data,
                 *, batch_size: int | None = None,
                 method: Literal["auto", "forward-over-reverse", "double-backward"] = "auto",
                 device: str | torch.device | None = None,
                 cache_graph: bool | None = None) -> None:
        from lossurf.surface.evaluate import EvalData

        if method not in HVP_METHODS:
            raise LossurfError(f"unknown HVP method {method!r}; use one of: {', '.join(HVP_METHODS)}")
        if not isinstance(data, EvalData):
            raise LossurfError("data must be an EvalData; build it with EvalData(x, y, task) "
                               "or EvalData.from_dataset(dataset)")
        if data.task == "regression":
            raise LossurfError("regression data (floating-point targets) have no Hessian here: "
                               "the Hessian functions differentiate the cross-entropy of class "
                               "or token ids and take no loss_fn; pass classification or "
                               "language-model data (integer targets)")
        device = api_device(device)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise LossurfError(f"batch_size must be a positive integer, got {batch_size!r}")
        state = as_state(weights)
        check_compatible([as_state(model), state], ["the model", "the weights"])
        check_finite_weights(state, "the weights")
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.method = DEFAULT_METHOD if method == "auto" else method
        net = copy.deepcopy(model)
        net.load_state_dict(state)
        net.eval()  # BN: the end point's running statistics; dropout off
        self._net = net.to(self.device)
        self.names = [n for n, p in net.named_parameters() if p.requires_grad]
        if not self.names:
            raise LossurfError("the model has no trainable parameters (every one has "
                               "requires_grad=False), so there is nothing to differentiate; "
                               "unfreeze those to analyse, e.g. model.requires_grad_(True)")
        params = dict(net.named_parameters())
        self._params = {k: params[k].detach() for k in self.names}
        # frozen parameters and buffers are held fixed, passed alongside
        self._fixed = {k: v.detach() for k, v in net.named_parameters() if k not in self._params}
        self._fixed.update({k: b.detach() for k, b in net.named_buffers()})
        self._shapes = [self._params[k].shape for k in self.names]
        self._sizes = [self._params[k].numel() for k in self.names]
        self.n = sum(self._sizes)
        self.dtype = self._params[self.names[0]].dtype
        self.theta = torch.cat([self._params[k].reshape(-1).double() for k in self.names])
        x = data.x.to(self.device)
        self._x = x.to(self.dtype) if x.is_floating_point() else x
        self._y = data.y.to(self.device)
        self._count = self._y.numel()
        with torch.no_grad():  # the ids against the number of outputs, once (one example)
            check_class_ids(self._y, functional_call(self._net, {**self._params, **self._fixed},
                                                     (self._x[:1],)))
        self.batch_size = batch_size or DEFAULT_BATCH
        single = len(self._x) <= self.batch_size
        self.cache_graph = self.method == "double-backward" and (
            single if cache_graph is None else bool(cache_graph))
        self._graphs: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        self.calls = 0

    # -- conversions between flat float64 vectors and per-parameter tensors -------------------
    def _split(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        if vector.shape != (self.n,):
            raise LossurfError(f"vector has shape {tuple(vector.shape)}; pass a flat vector of "
                               f"{self.n} entries (one per parameter)")
        pieces = torch.split(vector.to(self.device, self.dtype), self._sizes)
        return {k: p.reshape(s) for k, p, s in zip(self.names, pieces, self._shapes)}

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1).double() for t in tensors])

    def _at(self, theta: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self._params if theta is None else self._split(theta)

    def _batches(self):
        for start in range(0, len(self._x), self.batch_size):
            yield self._x[start: start + self.batch_size], self._y[start: start + self.batch_size]

    def _summed_loss(self, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
        logits = functional_call(self._net, {**params, **self._fixed}, (x,))
        return mean_loss(logits, y) * y.numel()

    # -- the three quantities ----------------------------------------------------------------
    def loss(self, theta: torch.Tensor | None = None) -> float:
        """The mean loss at ``theta`` (a flat vector; default the weights)."""
        params = self._at(theta)
        total = 0.0
        with torch.no_grad():
            for x, y in self._batches():
                total += float(self._summed_loss(params, x, y))
        return total / self._count

    def gradient(self, theta: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """``(loss, gradient)`` at ``theta`` (default the weights); the gradient is flat float64."""
        params = {k: v.detach().requires_grad_(True) for k, v in self._at(theta).items()}
        total, grads = 0.0, None
        for x, y in self._batches():
            loss = self._summed_loss(params, x, y)
            g = torch.autograd.grad(loss, list(params.values()))
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            total += float(loss.detach())
        return total / self._count, self._flat(grads) / self._count

    def hvp(self, vector: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v``; returned flat, float64, on the operator's device."""
        v = self._split(vector)
        if self.cache_graph:
            return self._hvp_cached(v).to(vector.device)
        out = None
        for x, y in self._batches():
            hv = (self._hvp_functorch(v, x, y) if self.method == "forward-over-reverse"
                  else self._hvp_double_backward(v, x, y))
            out = hv if out is None else [a + b for a, b in zip(out, hv)]
        self.calls += 1
        return self._flat(out).to(vector.device) / self._count

    __call__ = hvp

    def _hvp_functorch(self, v, x, y) -> list[torch.Tensor]:
        _load_jvp_decompositions()
        grad_fn = torch.func.grad(lambda p: self._summed_loss(p, x, y))
        _, hv = torch.func.jvp(grad_fn, (self._params,), (v,))
        return [hv[k] for k in self.names]

    def _hvp_double_backward(self, v, x, y) -> list[torch.Tensor]:
        params = {k: p.detach().requires_grad_(True) for k, p in self._params.items()}
        leaves = list(params.values())
        grads = torch.autograd.grad(self._summed_loss(params, x, y), leaves, create_graph=True)
        dot = sum((g * v[k]).sum() for g, k in zip(grads, self.names))
        return list(torch.autograd.grad(dot, leaves))

    def _hvp_cached(self, v: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self._graphs:
            for x, y in self._batches():
                leaves = [p.detach().requires_grad_(True) for p in self._params.values()]
                params = dict(zip(self.names, leaves))
                grads = torch.autograd.grad(self._summed_loss(params, x, y), leaves,
                                            create_graph=True)
                self._graphs.append((leaves, list(grads)))
        out = None
        vs = [v[k] for k in self.names]
        for leaves, grads in self._graphs:
            hv = torch.autograd.grad(grads, leaves, grad_outputs=vs, retain_graph=True)
            out = hv if out is None else [a + b for a, b in zip(out, hv)]
        self.calls += 1
        return self._flat(out) / self._count


def _load_jvp_decompositions() -> None:
    """Import torch's forward-AD decompositions once, quietly.

    Their module body (torch 2.13) registers its decompositions with ``torch.jit.script``, a
    DeprecationWarning about torch's own code that every first ``torch.func.jvp`` would emit.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", DeprecationWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401
