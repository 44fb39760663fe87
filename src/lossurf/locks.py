"""One writer at a time: an exclusive lock on an experiment directory or a surface store.

The lock is an ``flock`` on a small file that also records the holder's pid, host and command.
The kernel releases an ``flock`` when its holder dies, however it dies (SIGKILL included), so a
lock left by a killed process is stale by construction: the next writer takes it over, and no
one has to delete a lock file by hand. A second live writer is refused with a message that names
the holder, instead of both writing and one silently losing its work.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lossurf.errors import LossurfError

__all__ = ["exclusive_lock", "LOCK_NAME"]

#: The lock file's name inside the directory it protects.
LOCK_NAME = ".lossurf.lock"

# Directories this process holds: a nested request for one of them (a recipe that trains, then
# computes in the same directory) is granted at once rather than refused by its own holder.
_HELD: set[Path] = set()


def _holder(handle) -> str:
    """Who holds the lock, as recorded in the file (best effort: it may be mid-write)."""
    try:
        handle.seek(0)
        info = json.loads(handle.read() or "{}")
        return f"pid {info['pid']} on {info['host']} ({info.get('command', '?')})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process"


@contextmanager
def exclusive_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold the exclusive write lock of ``directory`` (created if missing) for the block.

    Args:
        directory: the experiment directory or zarr store to protect.
        what: how to name it in the message, e.g. ``"experiment directory runs/x"``.

    Raises:
        LossurfError: another live process holds the lock (its pid and command are named).
    """
    directory = Path(directory)
    key = directory.resolve()
    if key in _HELD:
        yield
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / LOCK_NAME, "a+", encoding="utf-8")
    except OSError as error:
        raise LossurfError(
            f"cannot write to {directory} ({error.strerror or error}); pass an --out on a "
            "writable disk with free space"
        ) from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise LossurfError(
                f"{what} is in use by {_holder(handle)}; wait for it to finish, or pass "
                "another --out"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
            handle.write(json.dumps(record))
            handle.flush()
        except OSError:
            pass  # the flock is what excludes; the record only improves the message
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        handle.close()  # closing releases the flock
