"""Stop the helper processes of a local Ray instance when the process that started it dies.

Ray ties its GCS server and raylet to the driver (the kernel kills them when it dies), but the
raylet's own children, the dashboard and runtime-env agents, then try to report the raylet's
"unexpected" death to the GCS that is already gone and wait out a hard-coded 60 s timeout
(``ray._private.utils.publish_error_to_driver``): after a Ctrl-C-less kill of ``lossurf``
they linger for a minute. :func:`reap_on_exit` starts a tiny watcher in its own session that
waits for the driver to go (its end of a pipe closes, however the driver ends) and then
terminates the processes it was given, if they are still the same processes (same start
time: a recycled pid is left alone). Linux only (it reads ``/proc``); elsewhere it does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["descendants", "reap_on_exit"]

# Runs in the watcher: argv holds "pid:starttime" pairs. Blocks on stdin until the driver's
# end closes, then SIGTERM, and SIGKILL what still runs two seconds later.
_WATCHER = r"""
import os, signal, sys, time
def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
targets = [tuple(a.split(":")) for a in sys.argv[1:]]
sys.stdin.buffer.read()
for signum in (signal.SIGTERM, signal.SIGKILL):
    alive = [int(p) for p, t in targets if started(p) == t]
    for pid in alive:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    if not alive:
        break
    time.sleep(2)
"""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int | None = None, containing: str | None = None) -> list[int]:
    """Every live descendant of ``pid`` (default: this process), from ``/proc``; [] elsewhere.

    With ``containing``, only those whose command line contains that text.
    """
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we read
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    if containing is not None:
        found = [p for p in found if containing in _command_line(p)]
    return found


def reap_on_exit(pids: list[int]) -> subprocess.Popen | None:
    """Start a watcher that terminates ``pids`` once this process has exited.

    Returns the watcher (close its ``stdin`` to reap now), or None where ``/proc`` is missing
    or no pid is alive.
    """
    if not sys.platform.startswith("linux"):
        return None
    targets = [f"{pid}:{start}" for pid in pids if (start := _start_time(pid)) is not None]
    if not targets:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHER, *targets],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the driver's group does not stop the watcher
        close_fds=True,
    )
