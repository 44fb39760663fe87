"""The directions of a direction surface, stored beside its zarr store (safetensors).

``STORE.zarr`` gets ``STORE.zarr.directions.safetensors``: the direction tensors (``d1.<key>``,
``d2.<key>``, and for PCA ``trajectory`` ``[T, 2]``) with, in the file's metadata, the request
that made them (kind, settings, the center's content hash) and the facts computed with them
(explained variance, Hessian eigenvalues, ...). A rerun of the same request reads them back
instead of drawing or computing them again, so a resumed store gets exactly the same anchors
(and a Hessian is not recomputed); a request that does not match is refused. Written
atomically (:func:`lossurf.runs.atomic_write_bytes`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lossurf.errors import LossurfError

__all__ = ["directions_path", "write_directions", "read_directions", "load_directions"]


def directions_path(store: str | Path) -> Path:
    """Where the directions of ``store`` live: ``<store>.directions.safetensors`` beside it."""
    store = Path(store)
    return store.with_name(store.name + ".directions.safetensors")


def write_directions(path: Path, tensors: dict[str, torch.Tensor], request: dict,
                     facts: dict) -> None:
    """Atomically write the direction tensors, the request and the facts to ``path``."""
    from safetensors.torch import save

    from lossurf.runs import atomic_write_bytes

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"request": json.dumps(request, sort_keys=True), "facts": json.dumps(facts)}
    atomic_write_bytes(path, save(contiguous, metadata=meta))


def read_directions(path: Path, request: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The stored tensors and facts for ``request``, or None when ``path`` does not exist.

    Raises:
        LossurfError: the file is damaged, or was made for another request.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load

    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        tensors = load(data)
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        stored, facts = json.loads(meta["request"]), json.loads(meta["facts"])
    except (OSError, SafetensorError, KeyError, ValueError) as err:
        raise LossurfError(
            f"directions file {path} is damaged ({type(err).__name__}); delete it and the store "
            "beside it, then run the same command again"
        ) from None
    wanted = json.loads(json.dumps(request, sort_keys=True))
    if stored != wanted:
        key = next((k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)), "?")
        raise LossurfError(
            f"directions file {path} was made for a different request ({key} differs: "
            f"{stored.get(key)!r} there, {wanted.get(key)!r} now); pass a new --out or delete the "
            "store and its directions file"
        )
    return tensors, facts


def load_directions(store: str | Path) -> dict:
    """Read the directions of a direction surface store from a notebook.

    Returns:
        ``{"d1": {key: tensor}, "d2": {...} (planes), "trajectory": tensor (PCA), "request":
        dict, "facts": dict}``.
    """
    from safetensors import safe_open

    path = directions_path(store)
    if not path.is_file():
        raise LossurfError(f"{path} does not exist; it is written beside a store of `lossurf "
                           "surface random|pca|hessian` (pass that store's path)")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    out: dict = {"request": json.loads(meta.get("request", "{}")),
                 "facts": json.loads(meta.get("facts", "{}"))}
    for name, tensor in tensors.items():
        head, _, key = name.partition(".")
        if head in ("d1", "d2") and key:
            out.setdefault(head, {})[key] = tensor
        else:
            out[name] = tensor
    return out
