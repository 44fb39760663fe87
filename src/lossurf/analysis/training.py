"""Did a run train? And training curves compared at equal gradient evaluations.

Pure functions of a run's per-epoch metrics table (``metrics.csv``: epoch 0 is the
initialization) and its status: the claims and the run tables use them to tell a run that
trained from one that never did (accuracy at chance, or the loss growing) and from one that
diverged (non-finite loss or weights), which are different failures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["CHANCE_MARGIN", "TRAINED", "DID_NOT_TRAIN", "DIVERGED", "Outcome",
           "training_outcome", "chance_accuracy", "mean_accuracy_at_evaluations"]

#: "Does not train": final training accuracy within 10 points of chance.
CHANCE_MARGIN = 0.1

TRAINED, DID_NOT_TRAIN, DIVERGED = "trained", "did not train", "diverged"


@dataclass(frozen=True)
class Outcome:
    """What became of one run: ``outcome`` is ``trained``, ``did not train``, ``diverged``
    or, for a run that has not finished, its status (``running``, ``not started``)."""

    outcome: str
    reason: str
    status: str
    initial_train_loss: float
    final_train_loss: float
    final_train_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def chance_accuracy(model_options: dict[str, Any]) -> float | None:
    """Accuracy of guessing, ``1 / classes`` (or ``1 / vocabulary`` for a language model),
    from a resolved model spec's options; None when they do not say."""
    for key in ("num_classes", "vocab_size"):
        n = model_options.get(key)
        if isinstance(n, int) and n > 0:
            return 1.0 / n
    return None


def training_outcome(status: str, metrics: Any, chance: float | None) -> Outcome:
    """Classify a run from its status and per-epoch metrics.

    ``diverged``: the status says so (NaN/Inf loss during training) or the last recorded
    training loss is not finite. ``did not train`` (a finished run): the final training
    accuracy is within :data:`CHANCE_MARGIN` of ``chance``, or the training loss grew from
    the initialization to the end. Otherwise ``trained``.

    Args:
        status: the run's ``status.json`` status.
        metrics: its metrics table (a DataFrame with ``train_loss`` and ``train_accuracy``).
        chance: accuracy of guessing (see :func:`chance_accuracy`); None skips that test.
    """
    first = float(metrics["train_loss"].iloc[0]) if len(metrics) else math.nan
    last = float(metrics["train_loss"].iloc[-1]) if len(metrics) else math.nan
    acc = float(metrics["train_accuracy"].iloc[-1]) if len(metrics) else math.nan

    def made(outcome: str, reason: str) -> Outcome:
        return Outcome(outcome, reason, status, first, last, acc)

    if status == "diverged" or (len(metrics) > 1 and not math.isfinite(last)):
        epoch = int(metrics["epoch"].iloc[-1]) if "epoch" in metrics and len(metrics) else "?"
        return made(DIVERGED, f"non-finite loss or weights (last finite epoch {epoch})")
    if status != "finished":
        return made(status, f"the run is {status}")
    if chance is not None and acc <= chance + CHANCE_MARGIN:
        return made(DID_NOT_TRAIN, f"final train accuracy {acc:.3f} is within "
                    f"{CHANCE_MARGIN:g} of chance {chance:.3f}")
    if last >= first:
        return made(DID_NOT_TRAIN, f"train loss grew {first:.3g} -> {last:.3g}")
    return made(TRAINED, f"train loss {first:.3g} -> {last:.3g}, accuracy {acc:.3f}")


def mean_accuracy_at_evaluations(
    evaluations: np.ndarray, accuracy: np.ndarray, budget: np.ndarray
) -> float:
    """Mean training accuracy at given gradient-evaluation counts (area under the curve of
    accuracy against gradient evaluations, sampled at ``budget``).

    The curve is piecewise linear between the epochs' points (epoch 0 at 0 evaluations), so
    a method that costs two gradients per step is read between its epochs at the counts
    where a one-gradient method ends its epochs.

    Raises:
        ValueError: ``budget`` goes past the curve's last evaluation count.
    """
    x = np.asarray(evaluations, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    b = np.asarray(budget, dtype=float)
    if b.size == 0 or b.max() > x.max() + 1e-9:
        raise ValueError(f"budget up to {b.max() if b.size else None} is past the curve's "
                         f"last point {x.max()}")
    return float(np.mean(np.interp(b, x, y)))
