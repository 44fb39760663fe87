"""The reproduction table: the paper's number next to ours, threshold, verdict and why; the
runs that did not train."""

from __future__ import annotations

import re

from lossurf.experiments.result import Claim, RecipeResult
from lossurf.report import write_report
from lossurf.runs import write_json


def test_inconclusive_claims_and_untrained_runs_are_shown(tmp_path) -> None:
    RecipeResult("runge-kutta", "Runge-Kutta integrators", "A.4", "p", tmp_path / "runge-kutta").save()
    Claim.save_all([
        Claim(5, "Adam's basins are wider", "basin width", "Adam >= 1.2 vs SGD >= 3.1", None,
              "restarts", paper="no number given", threshold="Adam > SGD",
              reason="basin still open"),
        Claim(8, "Heun beats SGD", "mean train accuracy", "heun 0.99 vs sgd 0.97", None,
              "runge-kutta", paper="Fig. 9: Heun above SGD and SGD x2",
              threshold="Heun > SGD and SGD x2",
              reason="basin still open at the grid's end for sgd@0"),
    ], tmp_path / "claims.json")
    write_json(tmp_path / "training.json", [
        {"recipe": "runge-kutta", "run": "rk2-midpoint@seed0", "status": "finished",
         "outcome": "did not train", "reason": "train loss grew 2.31 -> 26.4"},
        {"recipe": "runge-kutta", "run": "sgd@seed0", "status": "finished",
         "outcome": "trained", "reason": "train loss 2.3 -> 0.01"}])
    text = write_report(tmp_path).read_text()
    table = text[text.index('<section id="claims">'):]
    # recipe ran, data undecided: inconclusive with its reason; recipe did not run: not tested
    row8 = re.search(r'id="claim-8".*?</tr>', table).group(0)
    assert "INCONCLUSIVE" in row8 and "basin still open at the grid&#x27;s end" in row8
    assert "Fig. 9: Heun above SGD and SGD x2" in row8 and "Heun &gt; SGD and SGD x2" in row8
    row5 = re.search(r'id="claim-5".*?</tr>', table).group(0)
    assert "NOT TESTED" in row5 and "the restarts recipe did not run" in row5
    assert "<th>the paper&#x27;s number</th>" in table or "<th>the paper's number</th>" in table
    untrained = table[table.index('id="untrained-runs"'):]
    assert "rk2-midpoint@seed0" in untrained and "2.31 -&gt; 26.4" in untrained
    assert "sgd@seed0" not in untrained


def test_all_runs_trained_says_so(tmp_path) -> None:
    Claim.save_all([], tmp_path / "claims.json")
    write_json(tmp_path / "training.json", [
        {"recipe": "init", "run": "sgd", "status": "finished", "outcome": "trained",
         "reason": ""}])
    text = write_report(tmp_path).read_text()
    assert "All 1 runs behind these claims trained" in text


import pytest  # noqa: E402


@pytest.mark.parametrize("content, why", [
    (b'{"bad', "Unterminated string"),
    (b"\xff\xfe[]", "not UTF-8 text"),
    (b'{"number": 1}', "holds a dict, not a list"),
    (b'[{"number": 1, "bogus": 2}]', "not a list of claim records"),
    (b"[1, 2]", "not a list of claim records"),
])
def test_a_damaged_claims_file_is_one_line_and_exit_2(tmp_path, cli, content, why) -> None:
    RecipeResult("optimizers", "Optimizers", "4.1", "p", tmp_path / "optimizers").save()
    (tmp_path / "claims.json").write_bytes(content)
    code, _, err = cli("report", tmp_path)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"claims.json is corrupted ({why}" in err
    assert "run the same `lossurf run ...` or `lossurf demo` command again" in err
