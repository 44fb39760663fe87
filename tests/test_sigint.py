"""Ctrl-C (SIGINT) stops a command with one line and exit code 130; the same command resumes.

The real command runs in a subprocess with its progress bars on; SIGINT goes to its process
group (as a terminal's Ctrl-C does) a short delay after an event in its output: inside an
epoch of ``lossurf train``, inside a chunk of ``lossurf surface plane``. The rerun completes
and its whole output equals a clean uninterrupted run's, bitwise (see ``tests/_kill.py``).
"""

from __future__ import annotations

import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from _kill import KillPoint, bar_drawn, compare_trees, copy_tree, files, kill_and_rerun, run
from _kill_commands import BARS, PLANE, TRAIN, TRAIN_CONFIG

pytestmark = pytest.mark.slow

MESSAGE = "interrupted; run the same command again to resume where it stopped"


def _clean(args: list[str], work: Path) -> Path:
    done = run(args, work)
    assert done.code == 0 and done.clean(), done.stderr[-3000:]
    return work


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """SIGINT inside an epoch of ``train`` and inside a chunk of ``surface plane``: each one's
    result and its clean reference."""
    root = tmp_path_factory.mktemp("sigint")
    base = root / "base-train"
    base.mkdir()
    (base / "experiment.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG, sort_keys=False))
    train = KillPoint("train", TRAIN, files("exp/runs/sgd/epoch-0002.safetensors"), 0.02, signal.SIGINT)
    plane = KillPoint("plane", PLANE, files("plane.zarr/computed/c/*/*", 2), 0.05, signal.SIGINT)
    with ThreadPoolExecutor(2) as pool:
        train_ref = pool.submit(_clean, TRAIN, copy_tree(base, root / "ref-train"))
        train_result = pool.submit(kill_and_rerun, train, None, copy_tree(base, root / "int-train"))
        # The plane's inputs: the trained experiment (any of the two, they are equal bitwise).
        plane_base = root / "base-plane"
        plane_base.mkdir()
        shutil.copytree(train_ref.result() / "exp", plane_base / "exp")
        plane_ref = pool.submit(_clean, PLANE, copy_tree(plane_base, root / "ref-plane"))
        plane_result = kill_and_rerun(plane, None, copy_tree(plane_base, root / "int-plane"))
        return {"train": (train_result.result(), train_ref.result()),
                "plane": (plane_result, plane_ref.result())}


@pytest.mark.parametrize("command", ["train", "plane"])
def test_sigint_exits_130_with_one_line_and_the_rerun_equals_a_clean_run(command, interrupted):
    result, ref = interrupted[command]
    first = result.first
    assert first.signalled, f"the command ended (code {first.code}) before the interrupt"
    assert first.code == 130, first.stderr[-3000:]
    assert first.clean(), first.stderr[-3000:]
    # One line after whatever the bars drew: the reminder, nothing else.
    assert first.stderr.rstrip().splitlines()[-1] == MESSAGE
    assert first.stderr.count(MESSAGE) == 1 and "error" not in first.stderr.lower()
    again = result.again
    assert again.code == 0 and again.clean(), again.stderr[-3000:]
    assert bar_drawn(again.stderr, BARS[command])
    problems = compare_trees(ref, result.work)
    assert not problems, "\n".join(problems)
