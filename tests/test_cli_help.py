"""`lossurf --help` stays fast and readable: the CLI module imports nothing heavy, flags show no
`<bool>` value, arguments show their capitalized names, and every command's help renders."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import click
import pytest
import typer.main

from lossurf.cli import app

HEAVY = ("torch", "xarray", "pandas", "matplotlib", "zarr", "ray", "numpy", "scipy", "sklearn")

_PROBE = """
import json, sys
import lossurf.cli
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def test_importing_the_cli_loads_no_heavy_module():
    # A fresh interpreter: this test process has torch loaded already. A module check, not a
    # timing: importing torch alone is what made `lossurf --help` take seconds.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=set(HEAVY))],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI: (), ("train",), ("surface",), ("surface", "line"), ..."""
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_found():
    assert {("train",), ("surface", "plane"), ("distance",), ("run",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "lossurf")
def test_help_shows_no_bool_metavar(path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one row per option, so each can be read whole
    code, out, err = cli(*path, "--help")
    assert code == 0, err
    assert "Usage: " in out
    assert "<bool>" not in out
    help_rows = [line for line in out.splitlines() if "--help" in line and "Show this message" in line]
    assert len(help_rows) == 1
    assert not re.search(r"--help\s+<", help_rows[0])


def test_flag_pairs_and_arguments_read_as_documented(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("surface", "plane", "--help")
    assert code == 0
    row = next(line for line in out.splitlines() if "--no-progress" in line)
    # Nothing between the flag pair and its help text but the table's spacing.
    assert re.search(r"--progress\s+--no-progress\s+Show a progress bar", row), row
    assert "EXP_DIR" in out and "exp_dir" not in out
    # Options that take a value still say which.
    assert re.search(r"--steps\s+<int>", out)
    code, out, _ = cli("train", "--help")
    assert re.search(r"--check\s+Only check", out)
