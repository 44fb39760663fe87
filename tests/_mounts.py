"""A tmpfs mounted for one test: a full disk (small size) or a read-only one."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` (e.g. ``size=200k`` or ``size=64k,ro``) at the new
    directory ``mount``; skip the test where mounting is not allowed (needs root)."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
