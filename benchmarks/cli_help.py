"""Time `lossurf --help` and every subcommand's `--help` (target: under a second each).

Each command runs ``--reps`` times in a fresh interpreter (`python -c "from lossurf.cli import
main; main()" ... --help`, what the console script does); the script prints the median wall
time and the median CPU time (user + system; steadier than wall time on a shared machine), and
the same for a bare ``python -c pass`` and for ``python -c "import torch"`` (the cost the lazy
imports avoid), measured in the same run so the ratios hold on a loaded machine.

    .venv/bin/python benchmarks/cli_help.py [--reps 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import typer.main

from lossurf.cli import app


def wall(args: list[str], reps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``python *args`` over ``reps`` fresh processes."""
    times, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus)


def command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the CLI, the root first."""
    paths = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += command_paths(sub, (*path, name))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    reps = parser.parse_args().reps

    print(f"{'':<34}{'wall':>8}{'cpu':>8}")
    bare, bare_cpu = wall(["-c", "pass"], reps)
    print(f"{'python -c pass':<34}{bare:7.3f}s{bare_cpu:7.3f}s")
    seconds, cpu = wall(["-c", "import torch"], reps)
    label = 'python -c "import torch"'
    print(f"{label:<34}{seconds:7.3f}s{cpu:7.3f}s  (what --help no longer pays)")
    worst = 0.0
    for path in command_paths(typer.main.get_command(app)):
        seconds, cpu = wall(["-c", "from lossurf.cli import main; main()", *path, "--help"], reps)
        worst = max(worst, seconds)
        label = " ".join(("lossurf", *path, "--help"))
        print(f"{label:<34}{seconds:7.3f}s{cpu:7.3f}s  {seconds / bare:5.1f}x bare python")
    print(f"slowest --help: {worst:.3f} s wall ({'under' if worst < 1 else 'OVER'} the 1 s target)")


if __name__ == "__main__":
    main()
