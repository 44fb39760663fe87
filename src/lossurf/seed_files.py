"""The files an experiment keeps per seed, shared by every run of that seed.

``seeds/seed-<s>/init.safetensors`` is the seed's one initialization, loaded by every run (the
paper's protocol: every optimizer starts from the same weights); ``init.json`` holds its sha256,
recorded when it was written. The file is a deterministic function of the seed, so a missing or
damaged one is recreated; the recorded hash is what says it is damaged, and that the recreated
file is the same bytes the finished runs were trained from (another torch version may give other
weights, and then those runs cannot be checked).

``seeds/seed-<s>/orders.json`` holds, per epoch, the hash of the minibatch order derived from the
seed and the epoch, shared by every run of the seed. It is recorded by the first run that
reaches the epoch (so a config's epoch count costs nothing up front) and checked by every other:
an order that differs (another torch version, or an edited file) would make the runs' metrics
incomparable, so it is refused rather than trained on.
"""

from __future__ import annotations

import logging

from lossurf import models
from lossurf.config import ExperimentConfig
from lossurf.errors import LossurfError
from lossurf.runs import (
    ExperimentLayout,
    file_hash,
    read_json,
    save_weights,
    train_command,
    write_json,
)

__all__ = ["ensure_init", "recorded_init_hash", "read_orders", "check_order"]

_log = logging.getLogger(__name__)


def ensure_init(layout: ExperimentLayout, config: ExperimentConfig, seed: int) -> None:
    """Write seed ``seed``'s initialization and its sha256 (``init.json``); recreate it when it
    is missing or damaged (it is a deterministic function of the seed)."""
    path, record = layout.init(seed), layout.init_record(seed)
    recorded = recorded_init_hash(layout, seed)
    if path.is_file():
        if recorded is None:  # written before init.json existed: record the file as found
            write_json(record, {"sha256": file_hash(path)})
            return
        if file_hash(path) == recorded:
            return
        problem = "differs from the sha256 recorded in init.json"
    elif recorded is None:
        write_json(record, {"sha256": save_weights(path, models.build(config.model, seed=seed).state_dict())})
        return
    else:
        problem = "is missing"
    digest = save_weights(path, models.build(config.model, seed=seed).state_dict())
    if digest != recorded:
        raise LossurfError(
            f"{path} {problem}, and recreating it from seed {seed} gives other weights (another "
            "torch version?), so the runs trained from it cannot be checked; delete the "
            "experiment directory and train again"
        )
    _log.warning("%s %s; recreated it, bitwise identical, from seed %d", path, problem, seed)


def recorded_init_hash(layout: ExperimentLayout, seed: int) -> str | None:
    """The sha256 of the seed's init.safetensors recorded in init.json (None: not recorded)."""
    record = layout.init_record(seed)
    if not record.is_file():
        return None
    fix = f"delete it and run {train_command(layout.root)} to record it again"
    digest = read_json(record, fix).get("sha256")
    if not isinstance(digest, str):
        raise LossurfError(f"{record} is corrupted (no sha256 string); {fix}")
    return digest


def read_orders(layout: ExperimentLayout, seed: int) -> dict[str, str]:
    """The seed's recorded minibatch-order hashes (``{}`` before any epoch was reached)."""
    path = layout.orders(seed)
    if not path.is_file():
        return {}
    fix = "delete it and run `lossurf train` again (the hashes are recomputed from the seed)"
    orders = read_json(path, fix)
    if not all(isinstance(k, str) and k.isdigit() and isinstance(v, str) for k, v in orders.items()):
        raise LossurfError(f"{path} is corrupted (not epoch: hash pairs); {fix}")
    return orders


def check_order(
    layout: ExperimentLayout, seed: int, epoch: int, digest: str, orders: dict[str, str]
) -> dict[str, str]:
    """Check an epoch's order hash against the seed's record, recording it when the epoch is
    reached for the first time; returns the (possibly updated) record.

    Runs of one seed on several workers may record at once and one may drop another's new
    entry; that only means a later run records the same deterministic hash again."""
    recorded = orders.get(str(epoch))
    if recorded is None:
        orders = read_orders(layout, seed)  # another run may have recorded more epochs
        recorded = orders.get(str(epoch))
        if recorded is None:
            orders = {**orders, str(epoch): digest}
            write_json(layout.orders(seed), orders)
            return orders
    if recorded != digest:
        raise LossurfError(
            f"the minibatch order of epoch {epoch} differs from the one recorded in "
            f"{layout.orders(seed)} (written with another torch version, or edited); train with "
            "the torch version in manifest.json, or delete the directory to start over"
        )
    return orders
