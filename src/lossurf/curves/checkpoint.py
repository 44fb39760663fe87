"""A curve fit that survives being killed: per-epoch state on disk, one writer at a time.

::

    DIR/
      request.json        what is being fitted (end-point hashes, kind, settings, data)
      state.pt            after each epoch: epoch, bend, optimizer state, losses so far
                          (torch.save, read back with weights_only=True; removed at the end)
      bend.safetensors    the finished bend (a state dict of the architecture)
      status.json         finished: epochs, per-epoch mean losses, bend.safetensors' sha256

Every file is written atomically (:func:`lossurf.runs.atomic_write_bytes`) while holding
:func:`lossurf.locks.exclusive_lock` on ``DIR``. A killed fit, run again with the same request,
continues after its last finished epoch and ends with the same bytes as one that never stopped;
a finished fit is read back, not retrained; a directory made for another request is refused.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lossurf.curves.train import CurveTrainer
from lossurf.errors import LossurfError
from lossurf.locks import exclusive_lock
from lossurf.runs import (
    atomic_write_bytes,
    file_hash,
    load_weights,
    read_bytes,
    read_json,
    remove_temporaries,
    save_weights,
    write_json,
)

__all__ = ["fit_in", "BEND", "STATE", "STATUS", "REQUEST"]

BEND, STATE, STATUS, REQUEST = "bend.safetensors", "state.pt", "status.json", "request.json"
_FIX = "delete it and run the same command again (the fit restarts from the midpoint)"


def _load_state(path: Path) -> dict[str, Any]:
    data = read_bytes(path, _FIX)
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise TypeError("no epoch")
        if not isinstance(state.get("losses"), list) or len(state["losses"]) != state["epoch"]:
            raise TypeError("losses do not match its epoch")
    except Exception as error:  # anything unreadable in a file we wrote means damage
        raise LossurfError(f"curve state {path} is corrupted ({type(error).__name__}); {_FIX}") from None
    return state


def _check_request(directory: Path, request: dict) -> None:
    path = directory / REQUEST
    if path.is_file():
        stored = read_json(path, _FIX)
        for key in sorted(set(stored) | set(request)):
            if stored.get(key) != request.get(key):
                raise LossurfError(
                    f"curve directory {directory} was made for another request ({key}: "
                    f"{stored.get(key)!r} there, {request.get(key)!r} now); pass another --out "
                    "or delete it"
                )
    else:
        write_json(path, request)


def _finished(directory: Path, epochs: int) -> tuple[dict[str, torch.Tensor], list[float]] | None:
    status_path = directory / STATUS
    if not status_path.is_file():
        return None
    status = read_json(status_path, _FIX)
    bend = directory / BEND
    if status.get("epochs") != epochs or not bend.is_file() or file_hash(bend) != status.get("bend_sha256"):
        return None  # damaged or incomplete: the fit is redone (same bytes on CPU)
    return load_weights(bend, fix=_FIX), [float(v) for v in status.get("losses", [])]


def fit_in(directory: str | Path, trainer: CurveTrainer, epochs: int, request: dict, *,
           on_epoch: Callable[[int, float], None] | None = None,
           ) -> tuple[dict[str, torch.Tensor], list[float], bool]:
    """Fit ``trainer``'s bend for ``epochs`` epochs in ``directory``, resuming or reusing.

    Args:
        directory: where the fit's files live (created).
        trainer: a fresh trainer for the request (its bend at the starting point).
        epochs: total number of epochs.
        request: JSON-friendly identity of the fit; a directory holding another is refused.
        on_epoch: called with ``(epoch, mean loss)`` after each epoch trained here.

    Returns:
        ``(bend state dict, per-epoch mean losses, trained)``; ``trained`` is False when a
        finished fit was read back.
    """
    directory = Path(directory)
    with exclusive_lock(directory, f"curve directory {directory}"):
        remove_temporaries(directory)
        _check_request(directory, request)
        done = _finished(directory, epochs)
        if done is not None:
            return done[0], done[1], False
        state_path = directory / STATE
        losses: list[float] = []
        first = 1
        if state_path.is_file():
            state = _load_state(state_path)
            try:
                trainer.load_state_dict(state)
            except (KeyError, ValueError, TypeError, RuntimeError) as error:
                raise LossurfError(f"curve state {state_path} is corrupted ({error}); {_FIX}") from None
            losses, first = [float(v) for v in state["losses"]], state["epoch"] + 1
        for epoch in range(first, epochs + 1):
            losses.append(trainer.train_epoch(epoch))
            buffer = io.BytesIO()
            torch.save({"epoch": epoch, "losses": losses, **trainer.state_dict()}, buffer)
            atomic_write_bytes(state_path, buffer.getvalue())
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
        bend = trainer.bend_state()
        digest = save_weights(directory / BEND, bend)
        write_json(directory / STATUS, {"status": "finished", "epochs": epochs, "losses": losses,
                                        "bend_sha256": digest})
        state_path.unlink(missing_ok=True)
        return bend, losses, True
