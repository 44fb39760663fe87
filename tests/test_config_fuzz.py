"""Fuzz the experiment file: `lossurf train EXP.yaml --check` exits 0 or 2, never a traceback.

Every case starts from a small valid experiment and gives one to three fields (any level, run
and switch fields included) a random value of the right or a wrong type: integers small, huge
and negative, floats with inf and nan, strings with NUL, control characters and unicode, lists,
mappings, null, or the field removed. The generator is seeded, so a failure names a case that
reproduces. Most cases run in-process through the real entry point (`lossurf.cli.main`); a few
run as a real `lossurf` subprocess, which is what a user sees.
"""

from __future__ import annotations

import copy
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

SEED = 20260407
IN_PROCESS_CASES = 200
SUBPROCESS_CASES = 5

BASE: dict[str, Any] = {
    "name": "fuzz",
    "data": {"name": "digits", "max_train": 48, "max_test": 24},
    "model": {"name": "mlp", "options": {}, "init": {"scheme": "default"}},
    "seeds": [0],
    "epochs": 1,
    "batch_size": 16,
    "eval_subset": 16,
    "checkpoint_every": 1,
    "device": "cpu",
    "runs": [
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "adam", "lr": 0.01, "switch": {"to": "sgd", "lr": 0.1, "at": 0.5}},
    ],
}

# Every field of the schema, by path; ints index lists. Options get keys the builders know.
FIELDS: list[tuple[Any, ...]] = [
    ("name",), ("epochs",), ("batch_size",), ("eval_subset",), ("checkpoint_every",),
    ("device",), ("threads",), ("seeds",), ("seeds", 0), ("runs",), ("runs", 0),
    ("data",), ("data", "name"), ("data", "data_dir"), ("data", "augment"),
    ("data", "split_seed"), ("data", "max_train"), ("data", "max_test"), ("data", "bptt"),
    ("data", "options"), ("data", "options", "test_fraction"),
    ("model",), ("model", "name"), ("model", "options"), ("model", "options", "batch_norm"),
    ("model", "options", "dropout"), ("model", "options", "num_classes"), ("model", "init"),
    ("model", "init", "scheme"), ("model", "init", "mean"), ("model", "init", "std"),
    ("runs", 0, "optimizer"), ("runs", 0, "lr"), ("runs", 0, "name"), ("runs", 0, "options"),
    ("runs", 0, "options", "momentum"), ("runs", 0, "options", "weight_decay"),
    ("runs", 0, "options", "minibatch"), ("runs", 0, "switch"),
    ("runs", 1, "optimizer"), ("runs", 1, "switch", "to"), ("runs", 1, "switch", "lr"),
    ("runs", 1, "switch", "at"), ("runs", 1, "switch", "options"),
]

MISSING = object()


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of some YAML type, biased toward edge cases (at the top level: or MISSING)."""
    kinds = ["int", "int", "float", "float", "str", "str", "bool", "null", "list", "dict"]
    kind = rng.choice(kinds + ["missing"] if depth == 0 else kinds)
    if kind == "int":
        return rng.choice([0, 1, 2, 3, -1, -7, 7, 64, 255, 2**31, 2**63, 2**70, 10**400, -(2**64)])
    if kind == "float":
        return rng.choice([0.0, 0.5, -0.5, 1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan, 0.999, 3.5])
    if kind == "str":
        return rng.choice([
            "", " ", "x", "sgd", "adam", "mlp", "digits", "cpu", "cuda", "cuda:7", "bogus", "default",
            "normal", "a\x00b", "\x1b[31mred", "line\nbreak", "ünïcødé ☃", "x" * 300, ".", "..",
            "a/b", "1e3", "nan", "-1", "{}", "[", "*", "&anchor",
        ])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "null":
        return None
    if kind == "list":
        return [] if depth > 1 else [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        keys = ["name", "lr", "optimizer", "momentum", "x", "scheme", "to", "at"]
        return {} if depth > 1 else {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 2))}
    return MISSING


def mutate(raw: dict, path: tuple[Any, ...], value: Any) -> None:
    """Set (or delete, for MISSING) ``path`` in ``raw``, creating mappings on the way."""
    node: Any = raw
    for key in path[:-1]:
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                return
        elif not isinstance(node, dict):
            return
        elif key not in node or not isinstance(node[key], (dict, list)):
            node[key] = {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if isinstance(last, int) and last < len(node):
            if value is MISSING:
                del node[last]
            else:
                node[last] = value
    elif isinstance(node, dict):
        if value is MISSING:
            node.pop(last, None)
        else:
            node[last] = value


def make_case(index: int) -> dict:
    rng = random.Random(SEED * 1000 + index)
    raw = copy.deepcopy(BASE)
    for _ in range(rng.randint(1, 3)):
        mutate(raw, rng.choice(FIELDS), random_value(rng))
    return raw


def write_case(path: Path, raw: dict) -> Path:
    # PyYAML writes inf/nan as .inf/.nan and 10**400 as a plain integer, as a person might.
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def test_the_base_case_passes_the_check(tmp_path, cli):
    code, out, err = cli("train", str(write_case(tmp_path / "e.yaml", BASE)), "--check")
    assert code == 0, err
    assert out.startswith("fuzz: ok; 2 runs x 1 epoch of mlp")
    assert list(tmp_path.iterdir()) == [tmp_path / "e.yaml"]  # --check writes nothing


def test_the_generator_makes_both_outcomes_and_every_kind_of_value():
    cases = [make_case(i) for i in range(IN_PROCESS_CASES)]
    text = "\n".join(yaml.safe_dump(c, allow_unicode=True) for c in cases)
    for sample in (".inf", ".nan", "a\\0b", "ünïcødé", str(2**70), "null", "[]", "{}"):
        assert sample in text, sample
    assert any("epochs" not in c or "model" not in c or "lr" not in c["runs"][0] for c in cases if isinstance(c.get("runs"), list) and c["runs"] and isinstance(c["runs"][0], dict))


def test_fuzzed_configs_exit_0_or_2_without_traceback(tmp_path, cli):
    outcomes = {0: 0, 2: 0}
    for index in range(IN_PROCESS_CASES):
        raw = make_case(index)
        config = write_case(tmp_path / f"case{index}.yaml", raw)
        try:
            code, out, err = cli("train", str(config), "--check")
        except Exception as error:  # anything that escapes main() is a traceback for a user
            pytest.fail(f"case {index} raised {type(error).__name__}: {error}\n{config.read_text()}")
        assert code in (0, 2), f"case {index}: exit {code}\n{err}\n{config.read_text()}"
        assert "Traceback" not in err + out, f"case {index}\n{err}"
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), f"case {index}: {err!r}"
        outcomes[code] += 1
    assert outcomes[0] > 5 and outcomes[2] > 50, outcomes  # both paths exercised
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".yaml")) == []


def test_fuzzed_configs_through_the_real_command(tmp_path):
    for index in range(IN_PROCESS_CASES, IN_PROCESS_CASES + SUBPROCESS_CASES):
        config = write_case(tmp_path / f"case{index}.yaml", make_case(index))
        done = subprocess.run(
            [sys.executable, "-c", "from lossurf.cli import main; main()", "train", str(config), "--check"],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode in (0, 2), f"case {index}: {done.stderr}"
        assert "Traceback" not in done.stderr, f"case {index}: {done.stderr}"
