#!/usr/bin/env bash
# The README's test command: sets up .venv with pinned versions, then runs the whole suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
LOSSURF_EXTRA_REQS=requirements-ray.lock bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
