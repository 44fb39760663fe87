"""Worker processes of the ``processes`` backend: spawned, one task at a time, dying with the driver.

A worker is a fresh interpreter, ``python -m lossurf.workers FD``, talking to the driver over
one socket (file descriptor ``FD``, a :class:`multiprocessing.connection.Connection`). Like
multiprocessing's ``spawn`` method it shares nothing with the driver's memory (CUDA cannot be
used in a forked child); unlike it, it does not re-run the driver's main module, so a script
that calls ``train_experiment(jobs=4)`` needs no ``if __name__ == "__main__"`` guard.

The driver first sends ``(its pid, threads, arm the death signal, sys.path)``, then pickled
``(map id, function bytes or None, index, item)`` messages; the worker unpickles a map's
function once (the bytes come only with its first item of that map), runs ``fn(item)`` and
answers ``("ok", index, (result, seconds, cpu seconds, pid))`` or ``("error", index, payload)``.

A worker must never outlive its driver, however the driver ends:

- SIGKILL or a crash of the driver: on Linux the kernel sends the worker SIGKILL when its
  parent dies (``prctl(PR_SET_PDEATHSIG)``, armed only when the driver starts workers from its
  main thread: the signal follows the *thread* that started the child); everywhere, a watcher
  thread exits the worker once its parent pid changes (it was re-parented).
- Ctrl-C: the terminal's SIGINT reaches the whole process group, workers included; they ignore
  it and the driver, which owns the interrupt, terminates them.
- A normal exit of the driver: its end of the socket closes and the idle worker returns.

Errors come back as what they are: a :class:`~lossurf.errors.LossurfError` as its one-line
message (re-raised in the driver as the same error), anything else as the pickled exception
with the worker's traceback as text (or, when it does not pickle, its type and message).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

from lossurf.backends import timed_call
from lossurf.errors import LossurfError
from lossurf.threads import THREADS_ENV

__all__ = ["worker_main", "error_payload", "raise_payload"]

_PR_SET_PDEATHSIG = 1
#: How often the watcher thread checks that the driver is still the parent (seconds).
_WATCH_EVERY = 0.5


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only; else a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the watcher thread still covers it
        pass


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # re-parented: the driver is gone
            os._exit(1)
        time.sleep(_WATCH_EVERY)


def error_payload(error: Exception) -> tuple:
    """What the driver needs to raise ``error`` again: see :func:`raise_payload`."""
    trace = traceback.format_exc()
    if isinstance(error, LossurfError):
        return ("user", str(error))
    try:
        blob = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)  # some exceptions pickle but do not unpickle (required init args)
    except Exception:
        return ("foreign", f"{type(error).__name__}: {error}", trace)
    return ("exception", blob, trace)


def raise_payload(payload: tuple, pid: int) -> None:
    """Raise in the driver the exception a worker sent as ``payload``.

    A user error is the same one-line :class:`LossurfError` (no worker traceback: the message
    names the problem and its fix); anything else keeps the worker's traceback as a note.
    """
    kind = payload[0]
    if kind == "user":
        raise LossurfError(payload[1]) from None
    if kind == "exception":
        error = pickle.loads(payload[1])
        trace = payload[2]
    else:
        error = RuntimeError(payload[1])
        trace = payload[2]
    error.add_note(f"raised in worker process {pid}; its traceback:\n{trace}")
    raise error from None


def worker_main(conn: Any) -> None:
    """The loop of one worker process, on its end ``conn`` of the socket to the driver.

    The first message sets the worker up: the driver's pid (the worker exits once it is no
    longer its parent), torch CPU threads for every task (also set as ``LOSSURF_THREADS``, so
    code that picks its own count, like :func:`lossurf.engine.cpu_threads`, agrees), whether
    to arm ``PR_SET_PDEATHSIG``, and the driver's ``sys.path`` (so its functions unpickle).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    try:
        parent, threads, deathsig, path = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    if deathsig:
        _die_with_parent()
    if os.getppid() != parent:  # the driver died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sys.path[:] = path
    os.environ[THREADS_ENV] = str(threads)
    import torch

    torch.set_num_threads(threads)
    fn: Any = None
    current: Any = None
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the driver closed the socket (close() or its exit)
            return
        try:
            map_id, blob, index, item = pickle.loads(message)
            if map_id != current:
                fn, current = pickle.loads(blob), map_id
            reply = ("ok", index, timed_call(fn, item))
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            current = None  # a failed unpickle leaves no function: the next map resends it
            data = pickle.dumps(("error", -1, error_payload(error)), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(data)
        except OSError:
            return


def main(argv: list[str] | None = None) -> None:
    """``python -m lossurf.workers FD``: serve the driver on the inherited socket ``FD``."""
    from multiprocessing.connection import Connection

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        raise SystemExit("usage: python -m lossurf.workers FD (started by lossurf's processes backend)")
    worker_main(Connection(int(args[0])))


if __name__ == "__main__":
    main()
