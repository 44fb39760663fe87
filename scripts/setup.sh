#!/usr/bin/env bash
# Creates .venv (once) and installs the pinned dependencies and lossurf itself.
# Re-running is cheap: pip skips what is already installed at the pinned version.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.lossurf-installed
want="$(cat requirements.lock pyproject.toml ${LOSSURF_EXTRA_REQS:-} | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.lock ${LOSSURF_EXTRA_REQS:+-r $LOSSURF_EXTRA_REQS}
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
