"""``lossurf demo``: every recipe on the digits preset, the claims, and the HTML report.

It sits on top of the layers (recipes compute, the report draws), next to the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lossurf.experiments import run_all
from lossurf.report import write_report

__all__ = ["demo"]


def demo(out: str | Path = "runs/demo", progress: bool = True, preset: Any = "digits") -> Path:
    """Run every recipe on the ``digits`` preset, evaluate the claims, write the report.

    Args:
        out: output folder (default ``runs/demo``); running again resumes and redraws.
        progress: print progress and the wall time of each recipe.
        preset: another preset (name, path or ``Preset``) for a demo of other data.

    Returns:
        The path of ``report.html``.
    """
    out = Path(out)
    began = time.perf_counter()
    results = run_all(preset, out, progress=progress)
    report_began = time.perf_counter()
    path = write_report(out)
    report_time = time.perf_counter() - report_began
    if progress:
        print("wall time per recipe:")
        for result in results:
            print(f"  {result.recipe:<12} {result.wall_time:7.1f} s")
        print(f"  {'report':<12} {report_time:7.1f} s")
        print(f"  {'total':<12} {time.perf_counter() - began:7.1f} s")
    return path
