#!/usr/bin/env bash
# The README's test command: sets up .venv with pinned versions, then runs the whole suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
LOSSURF_EXTRA_REQS=requirements-ray.lock bash scripts/setup.sh
# Two workers (pytest-xdist), one test file each at a time: a 2-core CI machine runs the suite
# in about half the time, and tests that share a file (a module fixture, a Ray instance) stay
# together. Extra arguments go to pytest (e.g. `-n 0` to run in one process).
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
