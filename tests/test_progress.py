"""The training progress display renders whatever row it is given, never raises."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from lossurf.progress import format_number, is_diverged, training_progress


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        (0.123456, ".4f", "0.1235"),
        ("0.123456", ".4f", "0.1235"),        # read back from metrics.csv
        (" 2.5 ", ".3f", "2.500"),
        (3, ".4f", "3.0000"),
        ("nan", ".4f", "nan"),
        (math.nan, ".4f", "nan"),
        (math.inf, ".4f", "inf"),
        ("-inf", ".3f", "-inf"),
        ("", ".4f", "-"),
        (None, ".4f", "-"),
        ("abc", ".4f", "-"),
        (True, ".4f", "-"),
        ([1.0], ".4f", "-"),
        ("1e400", ".4f", "inf"),
        (0.5, "d", "0.5"),                     # a non-float spec falls back to repr
    ],
)
def test_format_number(value, spec, expected):
    assert format_number(value, spec) == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [({"diverged": True}, True), ({"diverged": "True"}, True), ({"diverged": "1"}, True),
     ({"diverged": False}, False), ({"diverged": "False"}, False), ({"diverged": ""}, False),
     ({}, False)],
)
def test_is_diverged(row, expected):
    assert is_diverged(row) is expected


def _render(calls) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    with training_progress(True, console=console) as report:
        for call in calls:
            report(*call)
    return buffer.getvalue()


def test_rows_read_back_from_csv_render_like_numbers():
    # The issue: a resumed run reports its last metrics.csv row, whose values are strings.
    text = _render([
        ("sgd", "2", "4", {"epoch": "2", "train_loss": "0.46431", "train_accuracy": "0.95"}),
    ])
    assert "2/4" in text and "loss 0.4643" in text and "acc 0.950" in text


def test_numbers_nan_missing_and_empty_rows_render():
    text = _render([
        ("a", 0, 3, {"train_loss": 2.30258, "train_accuracy": 0.1, "batch_loss": math.nan}),
        ("b", 0, 3, {"train_loss": "nan", "train_accuracy": ""}),
        ("c", 1, 3, {}),
        ("d", 1, 3, None),
        ("e", "x", "y", {"train_loss": object()}),
    ])
    assert "loss 2.3026  acc 0.100" in text
    assert "loss nan  acc -" in text
    assert "loss -  acc -" in text


def test_diverged_rows_fill_the_bar():
    text = _render([
        ("sgd", 0, 4, {"train_loss": 2.3, "train_accuracy": 0.1}),
        ("sgd", 2, 4, {"diverged": True}),
        ("adam", 1, 4, {"diverged": "True", "train_loss": "nan"}),
    ])
    lines = [line for line in text.splitlines() if "sgd" in line]
    assert "4/4" in lines[-1] and "loss diverged" in lines[-1]
    assert "loss diverged" in [line for line in text.splitlines() if "adam" in line][-1]


def test_disabled_yields_none():
    with training_progress(False) as report:
        assert report is None
