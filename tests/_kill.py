"""Kill the real ``lossurf`` command at chosen moments and compare output trees bitwise.

Used by ``test_kill_matrix.py`` and ``test_sigint.py``. A kill point is a trigger (a condition
on the output directory, checked every few milliseconds, or a fixed delay from the start) plus
a short fixed delay after it, so the signal lands in the middle of the work that follows the
event (an epoch, a chunk, a store's creation) rather than only between two of them.

:func:`assert_same_tree` compares an output tree with a clean run's: the same files, every
safetensors tensor bitwise (``torch.equal`` and dtype), every CSV's numeric columns bitwise
(``wall_time`` aside) and text columns equal, JSON and YAML equal once the output directory's
own path is replaced by a placeholder (``wall_time`` keys aside), and every zarr store's
arrays bitwise with the same attrs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
import zarr
from safetensors.torch import load_file

#: Keys and CSV columns that legitimately differ between two runs of the same command: wall
#: times (training, evaluation, checkpoints), and the hash of a metrics.csv (its timing columns);
#: that hash is checked against the file instead (:func:`_self_consistent`).
VOLATILE = {"wall_time", "eval_time", "checkpoint_time", "metrics_sha256"}
#: Files whose content depends on timing (report pages): only their presence is compared.
PRESENCE_ONLY = {".html", ".png", ".pdf", ".svg"}
#: Records of the processes, not results: the demo's log of the commands it ran and their
#: times (a killed run has one more), the report's record of what it drew from which bytes.
PRESENCE_ONLY_NAMES = {"invocations.json", "drawn.json"}

Trigger = Callable[[Path, float], bool]


def lossurf_command() -> list[str]:
    """The installed ``lossurf`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("lossurf")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lossurf.cli"]


def command_env() -> dict[str, str]:
    """An environment in which rich draws its live bars although stderr is not a TTY."""
    env = dict(os.environ)
    env.update(COLUMNS="100", LINES="40", FORCE_COLOR="1", TERM="xterm-256color",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("NO_COLOR", None)
    return env


@dataclass
class Outcome:
    """How one process ended: exit code (negative: killed by that signal) and its output."""

    code: int
    stdout: str
    stderr: str
    signalled: bool  # the signal was sent while the process was still running
    elapsed: float

    def clean(self) -> bool:
        return "Traceback" not in self.stdout and "Traceback" not in self.stderr


# ---- triggers ----------------------------------------------------------------------------


def at(seconds: float) -> Trigger:
    """Fire ``seconds`` after the start."""
    return lambda root, elapsed: elapsed >= seconds


def files(pattern: str, count: int = 1) -> Trigger:
    """Fire once ``count`` files (or directories) matching ``pattern`` exist under the root."""
    return lambda root, elapsed: root.is_dir() and sum(1 for _ in root.glob(pattern)) >= count


def lines(path: str, count: int) -> Trigger:
    """Fire once the text file ``path`` (under the root) has ``count`` lines, e.g. a metrics
    file with the header and the rows of epochs 0..count-2."""
    def fired(root: Path, elapsed: float) -> bool:
        try:
            return (root / path).read_bytes().count(b"\n") >= count
        except OSError:
            return False

    return fired


# ---- running -----------------------------------------------------------------------------


def run(args: list[str], cwd: Path, *, trigger: Trigger | None = None, delay: float = 0.0,
        sig: int = signal.SIGKILL, watch: Path | None = None, timeout: float = 240.0) -> Outcome:
    """Run ``lossurf ARGS`` in ``cwd``; with a ``trigger``, send ``sig`` ``delay`` seconds after
    it fires (the trigger watches ``watch``, default ``cwd``).

    The command runs in its own session and the signal goes to its process group, as a
    terminal's Ctrl-C does. Output goes to files, so a full pipe never stalls the command.
    """
    out_path, err_path = cwd.with_name(cwd.name + ".stdout"), cwd.with_name(cwd.name + ".stderr")
    began = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(lossurf_command() + args, cwd=cwd, env=command_env(),
                                stdout=out, stderr=err, start_new_session=True)
        signalled = False
        try:
            if trigger is not None:
                root = watch or cwd
                while proc.poll() is None and not trigger(root, time.monotonic() - began):
                    time.sleep(0.002)
                if proc.poll() is None:
                    time.sleep(delay)
                    if proc.poll() is None:
                        os.killpg(proc.pid, sig)
                        signalled = True
            code = proc.wait(timeout=timeout)
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    elapsed = time.monotonic() - began
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    err_path.unlink()
    return Outcome(code, stdout, stderr, signalled, elapsed)


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy of a work folder (an empty one when ``src`` does not exist)."""
    if src.exists():
        shutil.copytree(src, dst, symlinks=True)
    else:
        dst.mkdir(parents=True)
    return dst


def landed(root: Path) -> str:
    """Where a killed command stopped, in a few words: what its output folder holds."""
    def count(pattern: str) -> int:
        return sum(1 for path in root.glob(pattern) if path.is_file() or pattern.endswith(".zarr"))

    parts = [
        f"{count('**/epoch-*.safetensors')} checkpoints",
        f"{count('**/final.safetensors')} finals",
        f"{count('**/resume.pt')} resume states",
        f"{count('**/*.zarr')} stores",
        f"{count('**/*.zarr/computed/c/**/*')} chunks marked",
        f"temporaries {hidden_leftovers(root)[:3]}",
    ]
    return ", ".join(parts)


@dataclass
class KillPoint:
    """Kill ``args`` with ``sig`` ``delay`` s after ``trigger`` fires, then run them again."""

    name: str
    args: list[str]
    trigger: Trigger
    delay: float = 0.0
    sig: int = signal.SIGKILL


@dataclass
class KillResult:
    """What one kill point did: the interrupted run, where it stopped, the rerun, the diff."""

    point: KillPoint
    first: Outcome
    where: str
    again: Outcome
    work: Path
    problems: list[str]


def kill_and_rerun(point: KillPoint, ref: Path | None, work: Path) -> KillResult:
    """Run ``point``'s command in ``work`` (a fresh copy of the inputs), interrupt it, run it
    again to completion and compare ``work`` with the clean run's folder ``ref`` (if given)."""
    first = run(point.args, work, trigger=point.trigger, delay=point.delay, sig=point.sig)
    where = landed(work)
    again = run(point.args, work)
    problems = [] if ref is None else compare_trees(ref, work) if again.code == 0 else ["rerun failed"]
    return KillResult(point, first, where, again, work, problems)


def bar_drawn(stderr: str, marker: str) -> bool:
    """Whether rich drew a live bar (its bar glyphs and ``marker`` text) on stderr."""
    return "\u2501" in stderr and marker in stderr


# ---- comparing ---------------------------------------------------------------------------


def _normalize(value: Any, root: str) -> Any:
    """JSON-like ``value`` with ``root`` (the output folder's path) replaced by ``<OUT>`` and
    volatile keys dropped."""
    if isinstance(value, dict):
        return {k: _normalize(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [_normalize(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<OUT>")
    return value


def _listing(root: Path) -> tuple[set[str], set[str], list[str]]:
    """Plain files and zarr stores under ``root`` (relative paths), and hidden leftovers."""
    plain: set[str] = set()
    stores: set[str] = set()
    hidden: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in list(dirnames):
            if d.endswith(".zarr"):
                stores.add(str((here / d).relative_to(root)))
                dirnames.remove(d)
            elif d.startswith("."):
                hidden.append(str((here / d).relative_to(root)))
                dirnames.remove(d)
        for f in filenames:
            rel = str((here / f).relative_to(root))
            if f.startswith("."):
                hidden.append(rel)
            else:
                plain.add(rel)
    return plain, stores, hidden


def hidden_leftovers(root: Path) -> list[str]:
    """Hidden files under ``root`` other than locks (``.lossurf.lock`` files, ``.NAME.lock``
    folders beside stores): temporaries a kill left behind."""
    return [h for h in _listing(root)[2]
            if not Path(h).name.startswith(".lossurf.lock") and not h.endswith(".lock")]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _compare_safetensors(a: Path, b: Path) -> list[str]:
    ta, tb = load_file(a), load_file(b)
    if set(ta) != set(tb):
        return [f"tensor names differ: {sorted(set(ta) ^ set(tb))}"]
    return [f"tensor {k} differs" for k in ta
            if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]


def _cell(text: str) -> Any:
    """A CSV cell as the exact double its text names (NaN as a marker), else the text."""
    try:
        number = float(text)
    except ValueError:
        return text
    return "nan" if number != number else struct.pack("<d", number)


def _compare_csv(a: Path, b: Path) -> list[str]:
    with a.open(newline="") as fa, b.open(newline="") as fb:
        ra, rb = list(csv.reader(fa)), list(csv.reader(fb))
    ragged = any(len(row) != len(ra[0]) for row in ra + rb) if ra else True
    if ragged or not rb or ra[0] != rb[0] or len(ra) != len(rb):
        return [f"header/rows differ: {ra[:1]} x {len(ra)} vs {rb[:1]} x {len(rb)}"]
    problems = []
    for k, column in enumerate(ra[0]):
        if column in VOLATILE:
            continue
        ca, cb = [row[k] for row in ra[1:]], [row[k] for row in rb[1:]]
        if [_cell(x) for x in ca] != [_cell(x) for x in cb]:
            problems.append(f"column {column} differs: {ca} vs {cb}")
    return problems


def _compare_zarr(a: Path, b: Path, root_a: str, root_b: str) -> list[str]:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    problems = []
    attrs_a, attrs_b = _normalize(dict(ga.attrs), root_a), _normalize(dict(gb.attrs), root_b)
    if attrs_a != attrs_b:
        problems.append(f"attrs differ: {_diff(attrs_a, attrs_b)}")
    names_a, names_b = sorted(k for k, _ in ga.arrays()), sorted(k for k, _ in gb.arrays())
    if names_a != names_b:
        return problems + [f"arrays differ: {names_a} vs {names_b}"]
    for name in names_a:
        if not _same_bits(np.asarray(ga[name][...]), np.asarray(gb[name][...])):
            problems.append(f"array {name} differs")
    return problems


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)[:2000]
    return f"{a!r} vs {b!r}"[:2000]


def _self_consistent(path: Path) -> list[str]:
    """A run's status.json names the sha256 of its metrics.csv: it must be that file's."""
    value = json.loads(path.read_text())
    recorded = value.get("metrics_sha256") if isinstance(value, dict) else None
    if not recorded:
        return []
    actual = hashlib.sha256((path.parent / "metrics.csv").read_bytes()).hexdigest()
    return [] if actual == recorded else ["metrics_sha256 is not the sha256 of metrics.csv"]


def compare_trees(ref: Path, got: Path) -> list[str]:
    """Every difference between the clean tree ``ref`` and ``got`` (empty: the same)."""
    plain_r, stores_r, _ = _listing(ref)
    plain_g, stores_g, _ = _listing(got)
    problems = []
    if plain_r != plain_g:
        problems.append(f"files differ: missing {sorted(plain_r - plain_g)}, extra {sorted(plain_g - plain_r)}")
    if stores_r != stores_g:
        problems.append(f"stores differ: missing {sorted(stores_r - stores_g)}, extra {sorted(stores_g - stores_r)}")
    root_r, root_g = str(ref.resolve()), str(got.resolve())
    for rel in sorted(plain_r & plain_g):
        a, b = ref / rel, got / rel
        suffix = a.suffix
        if suffix in PRESENCE_ONLY or a.name in PRESENCE_ONLY_NAMES:
            continue
        if suffix == ".safetensors":
            found = _compare_safetensors(a, b)
        elif suffix == ".csv":
            found = _compare_csv(a, b)
        elif suffix == ".json":
            ja, jb = _normalize(json.loads(a.read_text()), root_r), _normalize(json.loads(b.read_text()), root_g)
            found = [] if ja == jb else [f"content differs: {_diff(ja, jb)}"]
            found += _self_consistent(b)
        elif suffix in (".yaml", ".yml"):
            same = _normalize(yaml.safe_load(a.read_text()), root_r) == _normalize(yaml.safe_load(b.read_text()), root_g)
            found = [] if same else ["content differs"]
        else:
            found = [] if a.read_bytes() == b.read_bytes() else ["bytes differ"]
        problems += [f"{rel}: {p}" for p in found]
    for rel in sorted(stores_r & stores_g):
        problems += [f"{rel}: {p}" for p in _compare_zarr(ref / rel, got / rel, root_r, root_g)]
    return problems
