"""Time `lossurf --help` and every subcommand's `--help` (target: under a second each).

Each command runs ``--reps`` times in a fresh interpreter (`python -c "from lossurf.cli import
main; main()" ... --help`, what the console script does); the script prints the median wall
time, and the same for a bare ``python -c pass`` and for ``python -c "import torch"`` (the cost
the lazy imports avoid), measured in the same run so the ratios hold on a loaded machine.

    .venv/bin/python benchmarks/cli_help.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import typer.main

from lossurf.cli import app


def wall(args: list[str], reps: int) -> float:
    """Median wall seconds of ``python *args`` over ``reps`` fresh processes."""
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


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

    bare = wall(["-c", "pass"], reps)
    torch_import = wall(["-c", "import torch"], reps)
    print(f"{'python -c pass':<32} {bare:6.3f} s")
    label = 'python -c "import torch"'
    print(f"{label:<32} {torch_import:6.3f} s  (what --help no longer pays)")
    worst = 0.0
    for path in command_paths(typer.main.get_command(app)):
        seconds = wall(["-c", "from lossurf.cli import main; main()", *path, "--help"], reps)
        worst = max(worst, seconds)
        label = " ".join(("lossurf", *path, "--help"))
        print(f"{label:<32} {seconds:6.3f} s  {seconds / bare:5.1f}x bare python")
    print(f"slowest --help: {worst:.3f} s ({'under' if worst < 1 else 'OVER'} the 1 s target)")


if __name__ == "__main__":
    main()
