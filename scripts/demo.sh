#!/usr/bin/env bash
# The README's main-job command: sets up .venv with pinned versions, then runs every recipe
# of the paper on the digits preset and writes runs/demo/report.html.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/lossurf demo --out runs/demo "$@"
