#!/usr/bin/env bash
# The README's main-job command: sets up .venv with pinned versions, then trains the bundled
# digits example and writes its results under runs/digits.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/lossurf train examples/digits.yaml --out runs/digits "$@"
