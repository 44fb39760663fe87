"""lossurf.reaper: helpers given to the watcher end when their driver is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lossurf.reaper import descendants, reap_on_exit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A driver that starts two helpers (one in its own session, as a daemon would be), hands only
# the first to the watcher, prints their pids and waits to be killed.
_DRIVER = """
import subprocess, sys, time
from lossurf.reaper import reap_on_exit
reaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
spared = subprocess.Popen(["sleep", "300"], start_new_session=True)
reap_on_exit([reaped.pid])
print(reaped.pid, spared.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def wait_gone(pid: int, deadline: float) -> bool:
    """Poll until ``pid`` has ended; a generous deadline bounds the wait, it measures nothing."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_a_killed_driver_takes_the_given_helpers_with_it():
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True)
    reaped, spared = map(int, driver.stdout.readline().split())
    try:
        assert alive(reaped) and alive(spared)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_gone(reaped, 60)
        assert alive(spared)  # only what it was given
    finally:
        for pid in (reaped, spared):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_descendants_lists_children_and_grandchildren():
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"],
    )
    try:
        end = time.monotonic() + 60
        while len(descendants()) < 2 and time.monotonic() < end:
            time.sleep(0.1)
        found = descendants()
        assert child.pid in found and len(found) >= 2
        assert descendants(containing="sleep 30") == [p for p in found if p != child.pid][:1]
    finally:
        child.kill()
        child.wait()


def test_nothing_to_watch_starts_no_watcher():
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert reap_on_exit([finished.pid]) is None
    assert reap_on_exit([]) is None
