"""`import lossurf` stays light: no ray, no matplotlib; the ray backend says how to install Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lossurf.errors import LossurfError


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import lossurf",
        "import lossurf.backends, lossurf.engine, lossurf.distributed, lossurf.surface",
        "from lossurf.backends import make_backend; make_backend('local')",
    ],
)
def test_import_does_not_pull_ray_or_matplotlib(code):
    loaded = _modules_after(code)
    assert "ray" not in loaded
    assert "matplotlib" not in loaded


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    from lossurf.backends import make_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(LossurfError, match=r"pip install 'lossurf\[ray\]'"):
        make_backend("ray")
