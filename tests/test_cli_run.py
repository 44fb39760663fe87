"""`lossurf run`, `lossurf report` and their user errors."""

from __future__ import annotations

import pytest
import yaml

from test_recipes import TINY


def test_run_one_recipe_then_report(tmp_path, cli):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    code, stdout, err = cli("run", "init", "--preset", preset, "--out", out, "--no-progress")
    assert code == 0, err
    assert (out / "init" / "result.json").is_file() and (out / "claims.json").is_file()
    code, stdout, err = cli("report", out)
    assert code == 0, err
    assert (out / "report.html").is_file()


def test_unknown_recipe_and_preset_exit_2(tmp_path, cli):
    code, _, err = cli("run", "telepathy", "--out", tmp_path, "--no-progress")
    assert code == 2 and "unknown recipe 'telepathy'" in err and "optimizers" in err
    code, _, err = cli("run", "init", "--preset", "imagenet", "--out", tmp_path, "--no-progress")
    assert code == 2 and "imagenet" in err and "digits" in err
    assert "Traceback" not in err


def test_demo_runs_every_recipe_and_writes_the_report(tmp_path, capsys):
    from lossurf.demo import demo
    from lossurf.presets import parse_preset

    path = demo(tmp_path, progress=True, preset=parse_preset(TINY))
    assert path == tmp_path / "report.html" and path.is_file()
    printed = capsys.readouterr().out
    for recipe in ("optimizers", "restarts", "switching", "batchnorm", "init", "runge-kutta", "beyond",
                   "report", "total"):
        assert recipe in printed


def test_report_jobs_reach_the_drawing_and_a_bad_count_exits_2(tmp_path, cli, monkeypatch):
    import lossurf.report

    code, _, err = cli("report", tmp_path, "--jobs", "0")
    assert code == 2 and "--jobs must be at least 1, got 0" in err and "Traceback" not in err
    assert not (tmp_path / "report.html").exists()
    (tmp_path / "init").mkdir()
    (tmp_path / "init/result.json").write_text("{}")  # unreadable: reported, nothing to draw
    seen = {}
    monkeypatch.setattr(lossurf.report, "draw_figures",
                        lambda items, jobs=None: seen.update(jobs=jobs) or {})
    assert cli("report", tmp_path, "--jobs", "3")[0] == 0 and seen == {"jobs": 3}
    assert cli("report", tmp_path)[0] == 0 and seen == {"jobs": None}


def test_demo_jobs_reach_the_recipes_and_a_bad_count_exits_2(tmp_path, cli, monkeypatch):
    import lossurf.demo

    code, _, err = cli("demo", "--out", tmp_path / "d", "--jobs", "0", "--no-progress")
    assert code == 2 and "--jobs must be at least 1, got 0" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # refused before anything is written
    seen = {}

    def fake_run_all(preset, out, progress=True, jobs=1, on_recipe=None):
        seen["jobs"] = jobs
        raise KeyboardInterrupt  # stop before the report; the CLI says how to resume

    monkeypatch.setattr(lossurf.demo, "run_all", fake_run_all)
    code, _, err = cli("demo", "--out", tmp_path / "d", "--jobs", "3", "--no-progress")
    assert seen == {"jobs": 3} and code == 130 and "run the same command again" in err


@pytest.mark.parametrize("command", [["run", "init"], ["run", "all"], ["demo"]])
def test_an_out_that_is_a_file_or_on_a_read_only_disk_is_one_line(tmp_path, cli, command,
                                                                   read_only_dir):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code, _, err = cli(*command, "--out", afile, "--no-progress")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"error: --out {afile} is a file, not a directory; "
                                            "pass the path of a directory")
    assert afile.read_text() == "mine"
    disk = read_only_dir
    code, _, err = cli(*command, "--out", disk / "paper", "--no-progress")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"error: cannot write {disk / 'paper'} (Read-only file "
                                            "system): the file system is read-only; pass an --out "
                                            "on a writable disk")


def test_report_into_a_folder_it_cannot_write_is_one_line(cli, read_only_dir):
    code, _, err = cli("report", read_only_dir)
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"error: cannot write into {read_only_dir} (Read-only file system); the report and its "
        "figures are written there: make it writable, or copy the folder somewhere you may "
        "write and report the copy")
