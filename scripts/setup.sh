#!/usr/bin/env bash
# Creates .venv (once) and installs the pinned dependencies and lossurf itself, each only when
# what it comes from changed since the last install: one stamp per lock file and one for
# pyproject.toml, kept in .venv/.stamps/ (a new .venv starts with none). So the README's two
# commands can alternate (test.sh adds the Ray lock, demo.sh does not) without reinstalling.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamps=.venv/.stamps
mkdir -p "$stamps"
rm -f .venv/.lossurf-installed  # the single stamp of earlier versions of this script

# Two setups at once (demo.sh and test.sh in two terminals) would install into one venv
# together; the second waits for the first, then finds its stamps fresh.
if command -v flock >/dev/null; then
    exec 9>"$stamps/.lock"
    flock 9
fi

pip() { .venv/bin/python -m pip --quiet "$@"; }
# digest FILES...: one hash over the files' contents.
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }
# fresh NAME HASH: true when the stamp NAME already records HASH.
fresh() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
# mark NAME HASH: records HASH in the stamp NAME, after the install it stands for succeeded.
mark() { printf '%s\n' "$2" >"$stamps/$1.tmp" && mv "$stamps/$1.tmp" "$stamps/$1"; }

want="$(digest requirements.lock)"
if ! fresh requirements.lock "$want"; then
    pip install --upgrade pip
    pip install -r requirements.lock
    mark requirements.lock "$want"
fi

# An extra lock (test.sh passes requirements-ray.lock) is installed together with the base
# lock so that pip resolves them as one set; its stamp covers both files for the same reason.
for extra in ${LOSSURF_EXTRA_REQS:-}; do
    want="$(digest requirements.lock "$extra")"
    if ! fresh "$(basename "$extra")" "$want"; then
        pip install -r requirements.lock -r "$extra"
        mark "$(basename "$extra")" "$want"
    fi
done

# lossurf itself, editable: the source is read in place, so only pyproject.toml (entry
# points, metadata) calls for a reinstall.
want="$(digest pyproject.toml)"
if ! fresh pyproject.toml "$want"; then
    pip install --no-deps --no-build-isolation -e .
    mark pyproject.toml "$want"
fi
