"""Choosing the evaluation strategy once per grid: the per-point loop or K points per pass.

The two strategies of :mod:`lossurf.surface.runners` win in different places:

- ``loop`` (one point at a time, BN folded, first layer shared, optionally compiled) wins on
  CPU for every model measured (W1 small BN CNN, W2 VGG-BN, W3 784-512-256 MLP): a CPU is never
  launch-bound, vmap turns convolutions over K weight sets into slow grouped convolutions, and
  only the loop can share the first layer (W3's most expensive one).
- ``vmap`` wins on a GPU when one point does not fill the device: a small model's forward is
  launch-bound, and K points per pass divide the launches by K. A model with large activations
  (VGG on 32x32 images) already fills the device with one point, and vmap's grouped
  convolutions are then slower: the loop wins.

:func:`rule_choice` encodes that from :func:`model_facts`; :func:`timed_choice` instead runs a
few points with each candidate (after a warm-up call, which absorbs compilation) and keeps the
fastest. Its ``clock`` is injectable, so tests fake the timings. The evaluator records the
choice and its reason in the surface's attrs (``strategy``, ``strategy_k``,
``strategy_reason``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Choice", "ModelFacts", "model_facts", "rule_choice", "timed_choice", "candidates",
           "memory_k", "LOOP_ACTIVATIONS", "DEFAULT_K"]

#: Activation values per example from which one point fills a GPU. VGG-BN w=0.5 on 32x32 has
#: 277k (the loop wins: vmap makes its convolutions grouped), the small BN CNN on 8x8 digits
#: 3.1k and the 784-512-256 MLP 778 (launch-bound: K points per pass win).
LOOP_ACTIVATIONS = 50_000
#: K points per pass for the rule; the timed choice also tries K/2 and 2K. Measured with
#: torch 2.11 on an H100 / H200 (issue 10), points/s at K=32 against K=8: the digits BN CNN
#: 2,180 / 2,365 against 2,001 / 2,159, the 784-256-256 MLP 5,072 / 4,976 against 1,256 /
#: 1,278; the loop won on VGG-BN (440 / 482 against 229 / 255 at K=32).
DEFAULT_K = 32
#: K points per pass may hold at most this share of the device's free memory in activations.
MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class Choice:
    """A strategy, its points per pass and why it was chosen."""

    strategy: str
    k: int
    reason: str


@dataclass(frozen=True)
class ModelFacts:
    """What the rules look at: convolutions, and activation values per example."""

    has_conv: bool
    activations: int
    parameters: int
    largest: int = 0  # the largest single layer output, values per example (0: unknown)


def model_facts(model: nn.Module, example: torch.Tensor) -> ModelFacts:
    """Facts of ``model`` from one forward of one example (on a copy's hooks; eval mode).

    ``activations`` sums the output sizes of the leaf modules with parameters (weight layers
    and normalisations), per example; ``largest`` is the largest of them.
    """
    total = largest = 0

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        nonlocal total, largest
        if isinstance(out, torch.Tensor):
            total += out.numel()
            largest = max(largest, out.numel())

    leaves = [m for m in model.modules()
              if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    except Exception:  # a model that needs more than one example: no facts, loop by default
        total, largest = LOOP_ACTIVATIONS, 0
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return ModelFacts(has_conv, total, sum(p.numel() for p in model.parameters()), largest)


def rule_choice(facts: ModelFacts | None, device: torch.device | str,
                k: int = DEFAULT_K) -> Choice:
    """The rule (module doc): loop on CPU and for large activations, else ``k`` points per pass.

    ``facts`` may be None on CPU, where they decide nothing.
    """
    device = torch.device(device)
    if device.type == "cpu" or facts is None:
        return Choice("loop", 1, "rule: CPU (not launch-bound; the loop folds BN and shares "
                                  "the first layer)")
    if facts.activations >= LOOP_ACTIVATIONS:
        return Choice("loop", 1, f"rule: {facts.activations:,} activation values per example "
                                  f"(>= {LOOP_ACTIVATIONS:,}): one point fills the device")
    return Choice("vmap", k, f"rule: {facts.activations:,} activation values per example "
                              f"(< {LOOP_ACTIVATIONS:,}): {k} points per pass fill the device")


def candidates(k: int = DEFAULT_K, largest_k: int | None = None) -> list[Choice]:
    """What :func:`timed_choice` tries: the loop, and K/2, K and 2K points per pass (those
    up to ``largest_k``, see :func:`memory_k`)."""
    ks = sorted(kk for kk in {max(2, k // 2), k, 2 * k} if largest_k is None or kk <= largest_k)
    return [Choice("loop", 1, "")] + [Choice("vmap", kk, "") for kk in ks]


def memory_k(facts: ModelFacts | None, batch_size: int, free_bytes: int | None,
             k: int = DEFAULT_K) -> int:
    """The largest K up to ``k`` (halving) whose activations, K points of ``batch_size``
    examples in float32, fit in :data:`MEMORY_SHARE` of ``free_bytes``; 1 when not even two
    points fit, ``k`` when the facts or the free memory are unknown."""
    if facts is None or free_bytes is None or facts.activations <= 0:
        return k
    per_point = facts.activations * batch_size * 4
    while k > 1 and k * per_point > MEMORY_SHARE * free_bytes:
        k //= 2
    return max(1, k)


def timed_choice(options: Sequence[Choice], run: Callable[[Choice, int], None], points: int,
                 clock: Callable[[], float] = time.perf_counter) -> Choice:
    """The fastest of ``options``: ``run(choice, n)`` evaluates ``n`` points with it.

    Each option first runs once untimed (compilation, allocation), then ``points`` points
    (at least one pass of the option) are timed. An option that fails is skipped.
    """
    timings: list[tuple[float, Choice]] = []
    for option in options:
        n = max(points, option.k)
        try:
            run(option, option.k)  # warm-up
            start = clock()
            run(option, n)
            timings.append(((clock() - start) / n, option))
        except Exception:  # an option the model does not support (vmap of data-dependent code)
            continue
    if not timings:
        return Choice("loop", 1, "timed: every option failed; the loop is the fallback")
    best_time, best = min(timings, key=lambda t: t[0])
    described = ", ".join(f"{o.strategy}{'' if o.strategy == 'loop' else f' K={o.k}'} "
                          f"{t * 1e3:.3g} ms/point" for t, o in timings)
    return Choice(best.strategy, best.k, f"timed: {described}")
