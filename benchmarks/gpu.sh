#!/usr/bin/env bash
# benchmarks/gpu.py on a GPU machine that has PyTorch but no package index.
#
#   bash benchmarks/gpu.sh fetch        # here, with PyPI: download the extra wheels to .whl/
#   bash benchmarks/gpu.sh run [ARGS]   # there: install .whl/ beside the machine's torch
#                                       # (into /tmp/lossurf-site, nothing else touched), run
#
# The wheels are the ones benchmarks/gpu.py lists (WHEELS), for CPython $PYVER (default 3.12)
# on x86-64. lossurf itself runs from this checkout (src/ on the path), not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
SITE="${SITE:-/tmp/lossurf-site}"

case "${1:-}" in
  fetch)
    mkdir -p .whl
    mapfile -t wheels < <(python3 benchmarks/gpu.py --print-wheels)
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
      platforms+=(--platform "$p")
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
      --implementation cp "${platforms[@]}" -d .whl "${wheels[@]}"
    ls .whl
    ;;
  run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl
    PYTHONPATH="$SITE:src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
      exec python3 benchmarks/gpu.py "$@"
    ;;
  *)
    echo "usage: bash benchmarks/gpu.sh fetch | run [gpu.py arguments]" >&2
    exit 2
    ;;
esac
