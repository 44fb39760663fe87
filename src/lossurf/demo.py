"""``lossurf demo``: every recipe on the digits preset, the claims, and the HTML report.

It sits on top of the layers (recipes compute, the report draws), next to the CLI. Each call
appends the command it ran and its wall times to ``OUT/invocations.json``, which the report
shows: the command actually run (not the last recipe's), and every process's time after a
resume, not only the last one's.
"""

from __future__ import annotations

import datetime
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from lossurf.experiments import run_all
from lossurf.locks import exclusive_lock
from lossurf.report import write_report
from lossurf.reporting.context import read_invocations
from lossurf.runs import ensure_directory, write_json

__all__ = ["demo"]


def _command(out: Path, preset: Any) -> str:
    """The command line that called us: ``lossurf demo ...``, or the API call."""
    if sys.argv and Path(sys.argv[0]).name == "lossurf":
        return shlex.join(["lossurf", *sys.argv[1:]])
    return f"lossurf.demo(out={str(out)!r}, preset={getattr(preset, 'name', preset)!r})"


def _record(out: Path, row: dict) -> None:
    """Write this invocation's row into ``OUT/invocations.json``: it replaces the row with its
    ``id``, or is appended (under the folder's lock)."""
    with exclusive_lock(out, "the demo's invocation record"):
        rows = [r for r in read_invocations(out) if r.get("id") != row["id"]]
        write_json(out / "invocations.json", rows + [row])


def demo(out: str | Path = "runs/demo", progress: bool = True, preset: Any = "digits",
         jobs: int = 1) -> Path:
    """Run every recipe on the ``digits`` preset, evaluate the claims, write the report.

    Args:
        out: output folder (default ``runs/demo``); running again resumes and redraws what
            changed.
        progress: print progress and the wall time of each recipe.
        preset: another preset (name, path or ``Preset``) for a demo of other data.
        jobs: runs trained at once, each in its own worker process (1: one after the other);
            the results are the same.

    Returns:
        The path of ``report.html``.
    """
    out = ensure_directory(out)
    began = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    row: dict[str, Any] = {"id": uuid.uuid4().hex, "command": _command(out, preset),
                           "started": started, "finished": False, "wall_time": 0.0}
    # recorded at the start and after each recipe, so that a process killed without a chance
    # to clean up (SIGKILL, a lost machine) still counts with its time up to its last recipe
    _record(out, row)

    def recipe_done(result: Any) -> None:
        row.setdefault("recipes", {})[result.recipe] = result.wall_time
        row["wall_time"] = round(time.perf_counter() - began, 2)
        _record(out, row)

    try:
        results = run_all(preset, out, progress=progress, jobs=jobs, on_recipe=recipe_done)
        row.update(finished=True, recipes={r.recipe: r.wall_time for r in results})
    finally:
        # an interrupted process is recorded too: its time counts in the total after a resume
        row["wall_time"] = round(time.perf_counter() - began, 2)
        _record(out, row)  # before the report, so the page names this command
    report_began = time.perf_counter()
    redrawn: list[str] = []
    path = write_report(out, redrawn=redrawn)
    report_time = time.perf_counter() - report_began
    if progress:
        print("wall time per recipe:")
        for result in results:
            print(f"  {result.recipe:<12} {result.wall_time:7.1f} s")
        print(f"  {'report':<12} {report_time:7.1f} s ({len(redrawn)} figures redrawn)")
        print(f"  {'total':<12} {time.perf_counter() - began:7.1f} s")
    return path
