"""A run's resume state (``runs/<run>/resume.pt``): where it stands after its last finished epoch.

Written after every epoch (atomically) and read back when the same ``lossurf train`` command runs
again after a kill, so the run continues from that epoch and ends bitwise identical (on CPU) to an
uninterrupted one. It holds the model and optimizer state and the :class:`ResumeState` fields,
the metrics rows among them; anything damaged is one :class:`~lossurf.errors.LossurfError` naming
the file and :data:`RESUME_FIX`.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lossurf.errors import LossurfError
from lossurf.runs import atomic_write_bytes, read_bytes

__all__ = ["ResumeState", "RESUME_FIX"]

#: The fix for a damaged resume state. It names no command: the same ``lossurf train``,
#: ``lossurf run`` or ``lossurf demo`` that trained the run resumes it (and a worker process
#: cannot tell which one its driver was).
RESUME_FIX = (
    "delete it and run the same command again: the run restarts from its initialization"
)


@dataclass
class ResumeState:
    """Where a run stands after its last finished epoch: what ``resume.pt`` holds besides the
    model and optimizer state. ``rows`` are the metrics rows so far (None in resume states
    written before they were kept), from which a damaged ``metrics.csv`` is restored."""

    epoch: int = 0
    phase: int = 0
    evaluations: int = 0
    wall_time: float = 0.0
    checkpoints: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] | None = None
    #: CPU threads the run trains with, fixed at its start: convolutions round differently
    #: with another count, so a run resumed under another load keeps the count it began with.
    threads: int | None = None

    def save(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Write ``resume.pt`` (atomically): these fields, the model's and the optimizer's state."""
        buffer = io.BytesIO()
        torch.save({**asdict(self), "model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, device: torch.device) -> tuple["ResumeState", dict, dict]:
        """Read ``resume.pt``; anything damaged is a :class:`LossurfError` naming the file."""
        data = read_bytes(path, RESUME_FIX)
        try:
            state = torch.load(io.BytesIO(data), weights_only=True, map_location=device)
        # torch.load raises EOFError (empty), UnpicklingError, RuntimeError (zip), KeyError, ...:
        # for a file we wrote ourselves, any of them means damage.
        except Exception as error:
            reason = "empty file" if not data else f"torch.load failed: {type(error).__name__}"
            raise LossurfError(f"resume state {path} is corrupted ({reason}); {RESUME_FIX}") from None
        try:
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}, not a dict")
            model, optimizer = state.pop("model"), state.pop("optimizer")
            progress = cls(**state)
            if not (isinstance(progress.epoch, int) and progress.epoch >= 0 and isinstance(model, dict)
                    and isinstance(optimizer, dict) and isinstance(progress.checkpoints, dict)
                    and (progress.threads is None
                         or (isinstance(progress.threads, int) and progress.threads >= 1))):
                raise TypeError("wrong field types")
            if progress.rows is not None and (
                len(progress.rows) != progress.epoch + 1
                or any(not isinstance(r, dict) or r.get("epoch") != i for i, r in enumerate(progress.rows))
            ):
                raise TypeError("its metrics rows do not match its epoch")
        except (TypeError, KeyError) as error:
            raise LossurfError(f"resume state {path} is corrupted ({error}); {RESUME_FIX}") from None
        return progress, model, optimizer
