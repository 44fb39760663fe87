"""`import lossurf` stays light: no ray, no matplotlib; the ray backend says how to install Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lossurf.errors import LossurfError


_PROBE = """
import json, sys
import lossurf
after_package = sorted(sys.modules)
import lossurf.backends, lossurf.distributed, lossurf.engine, lossurf.surface
lossurf.backends.make_backend("local")
print(json.dumps([after_package, sorted(sys.modules)]))
"""


def test_import_does_not_pull_ray_or_matplotlib():
    # One subprocess (a fresh interpreter; torch takes seconds to import) checks two stages:
    # `import lossurf`, then the core modules with a local backend built.
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    for loaded in json.loads(out.stdout.strip().splitlines()[-1]):
        assert "lossurf" in loaded
        assert "ray" not in loaded
        assert "matplotlib" not in loaded


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    from lossurf.backends import make_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(LossurfError, match=r"pip install 'lossurf\[ray\]'"):
        make_backend("ray")
