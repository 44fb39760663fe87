"""Suite-wide settings.

Tests use tiny tensors, for which torch's intra-op threads cost far more than they save on a
shared 2-core machine (measured: ~20x slower tiny-model steps with 2 threads under load).
``LOSSURF_THREADS=1`` also fixes the count of the commands the tests run (in process and in
subprocesses), so results compared bitwise never depend on the load of the moment.
"""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    previous_env = os.environ.get("LOSSURF_THREADS")
    torch.set_num_threads(1)
    os.environ["LOSSURF_THREADS"] = "1"
    yield
    torch.set_num_threads(previous)
    if previous_env is None:
        os.environ.pop("LOSSURF_THREADS", None)
    else:
        os.environ["LOSSURF_THREADS"] = previous_env


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the ``lossurf`` entry point in-process: ``cli(*args) -> (exit code, stdout, stderr)``."""
    import sys

    from lossurf.cli import main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lossurf", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty directory on a read-only tmpfs (needs root and mount permission; else skip)."""
    from _mounts import tmpfs

    with tmpfs(tmp_path / "read-only", "size=64k,ro") as disk:
        yield disk
