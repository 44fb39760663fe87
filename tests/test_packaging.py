"""Packaging: lossurf installs beside a user's own torch, and setup.sh installs only when a
lock file changed.

The metadata tests build the package the way pip does, from a copy of the sources in a temporary
directory (so no build output lands in the checkout), and never let pip reach an index: the
dry run uses ``--no-index`` in this interpreter's environment, which already holds torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
_PIP_ENV = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


# --- the package's metadata ------------------------------------------------------------------


def requirement_problems(metadata: str) -> list[str]:
    """What is wrong with the ``Requires-Dist`` lines of a METADATA file, one line per problem.

    A dependency must be a range that admits what the user already has: no exact pin (``==``,
    ``===``, ``~=``), no upper cap (``<``, ``<=``), and a lower bound (``>=`` or ``>``) that
    states the oldest version the code works with.
    """
    problems = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        ops = {spec.operator for spec in req.specifier}
        if ops & {"==", "===", "~="}:
            problems.append(f"{req.name} is pinned: {req.specifier}")
        if ops & {"<", "<="}:
            problems.append(f"{req.name} has an upper cap: {req.specifier}")
        if not ops & {">=", ">", "~=", "==", "==="}:  # a pin is reported once, above
            problems.append(f"{req.name} has no lower bound")
    return problems


def test_requirement_problems_flags_pins_caps_and_missing_bounds():
    metadata = "\n".join([
        "Metadata-Version: 2.4",
        "Name: example",
        "Requires-Dist: torch==2.13.0",
        "Requires-Dist: numpy===2.4.6",
        "Requires-Dist: zarr~=3.1",
        "Requires-Dist: pandas<3,>=2.1",
        "Requires-Dist: rich",
        "Requires-Dist: xarray>=2025.1",
        'Requires-Dist: ray==2.60.0; extra == "ray"',
    ])
    assert requirement_problems(metadata) == [
        "torch is pinned: ==2.13.0",
        "numpy is pinned: ===2.4.6",
        "zarr is pinned: ~=3.1",
        "pandas has an upper cap: <3,>=2.1",
        "rich has no lower bound",
        "ray is pinned: ==2.60.0",
    ]


def _source_copy(dest: Path) -> Path:
    """What a build of the package reads, copied without caches or earlier build output."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    return dest


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=_PIP_ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from the sources (with this environment's setuptools)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"),
         ".", cwd=src)
    (built,) = (tmp / "dist").glob("lossurf-*.whl")
    return built


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name).decode()


def test_built_metadata_states_ranges_not_pins(wheel):
    metadata = _metadata(wheel)
    requires = {
        canonicalize_name(Requirement(line.split(":", 1)[1]).name): Requirement(line.split(":", 1)[1])
        for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    }
    assert requirement_problems(metadata) == []
    torch = requires["torch"]
    assert torch.marker is None, "torch is a dependency of the package itself, not of an extra"
    (bound,) = [s for s in torch.specifier if s.operator == ">="]
    # The lock pins the version the tests run on; the range must admit it.
    locked = _locked(ROOT / "requirements.lock")
    assert torch.specifier.contains(locked["torch"], prereleases=True)
    assert bound.version == "2.4"
    assert "ray" in requires and 'extra == "ray"' in str(requires["ray"].marker)


def test_built_wheel_carries_presets_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(entry).decode()
    presets = sorted(p.name for p in (ROOT / "src/lossurf/presets").glob("*.yaml"))
    assert presets and all(f"lossurf/presets/{p}" in names for p in presets)
    assert "lossurf/py.typed" in names
    assert re.search(r"^lossurf = lossurf\.cli:main$", entry_points, re.M)


def _locked(path: Path) -> dict[str, str]:
    """``name -> version`` of a lock file's ``name==version`` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_lock_files_pin_every_dependency_exactly():
    base, ray = _locked(ROOT / "requirements.lock"), _locked(ROOT / "requirements-ray.lock")
    assert base["torch"] == "2.13.0" and "ray" in ray
    assert not set(base) & set(ray), "a package is pinned in both lock files"
    for req in (Requirement(line.split(":", 1)[1]) for line in _pyproject_requirements()):
        name = canonicalize_name(req.name)
        pinned = base.get(name) or ray.get(name)
        assert pinned, f"{name} is a dependency but no lock file pins it"
        assert req.specifier.contains(pinned, prereleases=True), f"{name}=={pinned} outside {req}"


def _pyproject() -> dict:
    """The ``[project]`` table of pyproject.toml."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pyproject_requirements() -> list[str]:
    """The pyproject's dependencies and extras as ``Requires-Dist:`` lines (no build needed)."""
    project = _pyproject()
    lines = [f"Requires-Dist: {d}" for d in project["dependencies"]]
    for deps in project["optional-dependencies"].values():
        lines += [f"Requires-Dist: {d}" for d in deps]
    return lines


def test_install_beside_an_existing_torch_plans_no_torch(tmp_path):
    """``pip install .`` in an environment that holds torch keeps that torch.

    This interpreter's environment holds torch (the lock's build, as a user's CUDA build would
    be); ``--no-index`` keeps pip off every index, so a plan that wanted another torch fails
    instead of downloading one.
    """
    from importlib.metadata import version

    assert version("torch")  # the premise: torch is already installed here
    src = _source_copy(tmp_path / "src")
    report = tmp_path / "report.json"
    _pip("install", "--dry-run", "--no-index", "--no-build-isolation", "-q",
         "--report", str(report), ".", cwd=src)
    planned = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    assert "torch" not in planned
    # Every other dependency is satisfied by what is installed, too: only lossurf is new.
    assert planned == {"lossurf": _pyproject()["version"]}


# --- the README and the docs -----------------------------------------------------------------


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", path.read_text())


@pytest.mark.parametrize("doc", ["README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_doc_links_stay_inside_the_repository(doc):
    path = ROOT / doc
    for link in _links(path):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue  # web addresses and anchors
        target = (path.parent / link.split("#", 1)[0]).resolve()
        assert target.is_relative_to(ROOT), f"{doc} links {link}, outside the repository"
        assert target.exists(), f"{doc} links {link}, which does not exist"
    assert "../shared" not in path.read_text(), f"{doc} points at ../shared"


def test_readme_names_the_torch_version_the_tests_ran_on():
    torch = _locked(ROOT / "requirements.lock")["torch"]
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"tests ran on[^\n]*torch {re.escape(torch)}", readme, re.I), (
        f"README.md should say the tests ran on torch {torch}, the version requirements.lock pins"
    )
    assert "[docs/design.md](docs/design.md)" in readme


# --- scripts/setup.sh: one stamp per lock file ------------------------------------------------


_FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for .venv/bin/python: records each call, fails when asked to.
echo "$*" >> "$FAKE_LOG"
if [ -n "${FAKE_FAIL:-}" ] && [[ "$*" == *"$FAKE_FAIL"* ]]; then exit 1; fi
"""


@pytest.fixture
def fake_checkout(tmp_path) -> Path:
    """The scripts and lock files in a temporary root whose .venv is a fake that records calls."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "test.sh", "demo.sh"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    for name in ("requirements.lock", "requirements-ray.lock", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    (root / ".venv" / "bin").mkdir(parents=True)
    for exe in ("python", "lossurf"):
        (root / ".venv" / "bin" / exe).write_text(_FAKE_PYTHON)
        (root / ".venv" / "bin" / exe).chmod(0o755)
    return root


def _run(root: Path, script: str, extra: str | None = None, fail: str | None = None) -> list[str]:
    """Run ``bash scripts/SCRIPT``; returns the pip calls it made (one string each)."""
    log = root / "calls.log"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSURF_EXTRA_REQS", "FAKE_FAIL")}
    env["FAKE_LOG"] = str(log)
    if extra:
        env["LOSSURF_EXTRA_REQS"] = extra
    if fail:
        env["FAKE_FAIL"] = fail
    proc = subprocess.run(["bash", f"scripts/{script}"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    calls = [c for c in log.read_text().splitlines() if c.startswith("-m pip")]
    if fail:
        assert proc.returncode != 0, "a failed install must fail the script"
    else:
        assert proc.returncode == 0, proc.stderr
    return calls


def test_setup_installs_each_lock_once(fake_checkout):
    root = fake_checkout
    assert _run(root, "setup.sh") == [
        "-m pip --quiet install --upgrade pip",
        "-m pip --quiet install -r requirements.lock",
        "-m pip --quiet install --no-deps --no-build-isolation -e .",
    ]
    assert _run(root, "setup.sh") == []
    # The Ray lock (test.sh) is installed once, with the base lock, and not again.
    ray = ["-m pip --quiet install -r requirements.lock -r requirements-ray.lock"]
    assert _run(root, "setup.sh", extra="requirements-ray.lock") == ray
    assert _run(root, "setup.sh", extra="requirements-ray.lock") == []
    assert _run(root, "setup.sh") == []


def test_alternating_the_readme_commands_installs_nothing_the_second_time(fake_checkout):
    root = fake_checkout
    assert _run(root, "demo.sh") != []
    assert _run(root, "test.sh") != []  # adds the Ray lock
    assert _run(root, "demo.sh") == []
    assert _run(root, "test.sh") == []
    log = (root / "calls.log").read_text()
    assert "-m pytest" in log  # test.sh still ran the suite


def test_setup_reinstalls_only_what_changed(fake_checkout):
    root = fake_checkout
    _run(root, "setup.sh", extra="requirements-ray.lock")
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n# touched\n")
    assert _run(root, "setup.sh", extra="requirements-ray.lock") == [
        "-m pip --quiet install --no-deps --no-build-isolation -e .",
    ]
    with open(root / "requirements-ray.lock", "a") as f:
        f.write("# touched\n")
    assert _run(root, "setup.sh", extra="requirements-ray.lock") == [
        "-m pip --quiet install -r requirements.lock -r requirements-ray.lock",
    ]
    # A changed base lock re-checks the Ray lock too: they are resolved as one set.
    with open(root / "requirements.lock", "a") as f:
        f.write("# touched\n")
    assert _run(root, "setup.sh", extra="requirements-ray.lock") == [
        "-m pip --quiet install --upgrade pip",
        "-m pip --quiet install -r requirements.lock",
        "-m pip --quiet install -r requirements.lock -r requirements-ray.lock",
    ]


def test_setup_keeps_no_stamp_for_a_failed_install(fake_checkout):
    root = fake_checkout
    _run(root, "setup.sh", fail="-r requirements.lock")
    assert not (root / ".venv" / ".stamps" / "requirements.lock").exists()
    # The next run tries again, and records the stamp once it succeeds.
    assert "-m pip --quiet install -r requirements.lock" in _run(root, "setup.sh")
    assert _run(root, "setup.sh") == []
