"""The optbench command: run a spec in-process, and refuse bad input in one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.cli import main
from services.db import metric_queries, store
from services.db.session import unit_of_work

SMALL_SPEC = {
    "name": "cli test",
    "dataset": {
        "name": "classification",
        "n_samples": 300,
        "n_features": 8,
        "n_informative": 4,
        "n_classes": 3,
    },
    "model": {"name": "linear"},
    "optimizers": [{"name": "gd", "lr": 0.5}, {"name": "Adam", "lr": 0.01}],
    "epochs": 2,
    "batch_size": 50,
    "seeds": [0, 1],
    "target": {"metric": "val_accuracy", "value": 0.3},
}


def test_run_stores_the_job_and_prints_json(
    embedded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SMALL_SPEC))
    assert main(["run", str(spec_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded"
    rows = {row["label"]: row for row in out["summary"]["optimizers"]}
    assert rows["adam"]["runs"] == 2 and rows["adam"]["target_reached"] == "2/2"
    with unit_of_work() as session:
        job = store.get_job(session, out["job_id"])
        assert job.status == "succeeded" and job.summary == out["summary"]
        # 300 samples less 20 % validation and 20 % test leave 180 for training: batches of 50
        # give 4 steps per epoch for adam, and gd takes 1
        assert [run.total_steps for run in job.runs] == [2, 8, 2, 8]
        assert metric_queries.count_steps(session, [run.id for run in job.runs]) == 20
        assert all(run.test_accuracy is not None for run in job.runs)


def test_run_prints_the_table(
    embedded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({**SMALL_SPEC, "seeds": [0]}))
    assert main(["run", str(spec_file)]) == 0
    out, err = capsys.readouterr()
    assert "target: val_accuracy >= 0.3" in out
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["gd", "adam"]
    # Progress went to standard error as plain lines (it is not a terminal), ending done.
    assert "\x1b" not in out + err and "\r" not in err
    assert err.splitlines()[-1].startswith("succeeded: 10/10 steps (100%)")


def test_a_bad_spec_file_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump({**SMALL_SPEC, "epochs": -1}))
    assert main(["run", str(spec_file)]) == 4  # an invalid spec
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "epochs: Input should be greater than or equal to 1" in err


def test_a_missing_spec_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.json")]) == 2  # a usage mistake
    assert "cannot read spec file" in capsys.readouterr().err


def test_a_spec_that_is_not_json_is_an_invalid_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "broken.json"
    spec_file.write_text('{"epochs": ')
    assert main(["run", str(spec_file)]) == 4
    assert "is not valid JSON/YAML" in capsys.readouterr().err


def test_report_and_export_write_files(
    embedded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({**SMALL_SPEC, "seeds": [0]}))
    assert main(["run", str(spec_file), "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out)["job_id"]

    report = tmp_path / "report.html"
    assert main(["report", job_id, "-o", str(report)]) == 0
    html = report.read_text()
    assert 'id="ob-chart-data"' in html and "adam" in html and "gd" in html

    csv_file = tmp_path / "series.csv"
    assert main(["export", job_id, "--format", "csv", "-o", str(csv_file)]) == 0
    lines = csv_file.read_text().splitlines()
    # Said on standard error: the rows written (the header aside) and where.
    assert capsys.readouterr().err == f"wrote {len(lines) - 1} rows as csv to {csv_file}\n"
    step_rows = [line for line in lines[1:] if ",step," in f",{line},"]
    assert len(step_rows) == 2 + 8  # gd: 2 steps, adam: 2 epochs x 4

    assert main(["report", "00000000-0000-0000-0000-000000000000"]) == 1  # no such job
    assert "no job with id" in capsys.readouterr().err


def test_report_names_its_file_after_the_job_and_never_overwrites_silently(
    embedded_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({**SMALL_SPEC, "seeds": [0], "epochs": 1}))
    assert main(["run", str(spec_file), "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out)["job_id"]
    monkeypatch.chdir(tmp_path)
    assert main(["report", job_id[:8]]) == 0  # a prefix names the job
    written = tmp_path / f"optbench-report-{job_id}.html"
    assert "<html" in written.read_text().lower()
    written.write_text("mine")
    assert main(["report", job_id]) == 2  # exists: a usage mistake, the file kept
    assert "--force" in capsys.readouterr().err and written.read_text() == "mine"
    assert main(["report", job_id, "--force"]) == 0
    assert written.read_text() != "mine"


def test_a_job_id_prefix_must_name_one_job() -> None:
    from services.cli import CliError, full_id
    from services.errors import NotFound

    ids = ["abcd1234-0000-4000-8000-000000000001", "abcd5678-0000-4000-8000-000000000002"]
    assert full_id("ABCD12", lambda: ids) == ids[0]  # any case
    assert full_id("abcd5678-00", lambda: ids) == ids[1]  # dashes allowed
    whole = "00000000-0000-4000-8000-000000000003"
    assert full_id(whole.replace("-", ""), lambda: []) == whole  # a whole id is not looked up
    with pytest.raises(CliError, match="names 2 jobs"):
        full_id("abcd", lambda: ids)
    with pytest.raises(NotFound, match="no job whose id starts with ffff"):
        full_id("ffff", lambda: ids)
    with pytest.raises(CliError, match="first 4 hex digits"):
        full_id("xyz1", lambda: ids)


def test_help_is_plain_text_and_names_the_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # help wraps to the terminal
    assert "``" not in text and "Compare torch.optim optimizers" in text
    assert "3 API unreachable" in text and "unique prefix" in text and "list" in text


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import cli

    names = [[name] for name in cli.commands] + [["keys", name] for name in ("create", "list")]
    names += [["suite", name] for name in ("lecture", "run", "scores", "report")]
    assert len(names) == 26  # with delete, trials, compare, history and the suite group
    for words in names:
        assert main([*words, "--help"]) == 0, words
        text = capsys.readouterr().out
        assert text.startswith(f"Usage: optbench {' '.join(words)} [OPTIONS]"), words


def test_usage_mistakes_exit_2_with_clicks_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "Error: Missing argument 'SPEC'" in capsys.readouterr().err
    assert main(["list", "--status", "done"]) == 2
    assert "Invalid value for '--status': 'done' is not one of" in capsys.readouterr().err
    assert main(["worker", "--parts", "0"]) == 2
    assert "neither auto nor a whole number >= 1" in capsys.readouterr().err
    assert main(["nonsense"]) == 2
    assert "No such command 'nonsense'" in capsys.readouterr().err


JOB = "00000000-0000-4000-8000-000000000001"  # a whole id: not looked up


def test_export_to_tensorboard_needs_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", JOB, "--format", "tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err == "optbench: error: tensorboard writes a directory of event files: pass -o DIR\n"


def test_export_to_mlflow_needs_a_tracking_uri(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["export", JOB, "--format", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert "pass -o URI" in err and "MLFLOW_TRACKING_URI" in err


def test_export_hands_the_format_and_destination_to_export_series(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI's part only: what it passes and what it says (services/export.py writes)."""
    from services import export

    calls: list[tuple[str, str, object]] = []

    def record(job_id: str, fmt: str, out: object) -> int:
        calls.append((job_id, fmt, out))
        return 7

    monkeypatch.setattr(export, "export_series", record)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:secret@127.0.0.1:5000")
    assert main(["export", JOB, "--format", "mlflow"]) == 0
    out, err = capsys.readouterr()
    assert calls[-1] == (JOB, "mlflow", "http://bob:secret@127.0.0.1:5000") and out == ""
    assert err == "wrote 7 metric values as mlflow to MLflow at http://bob:***@127.0.0.1:5000\n"
    assert main(["export", JOB, "--format", "mlflow", "-o", "sqlite:///m.db"]) == 0
    assert calls[-1][2] == "sqlite:///m.db"  # -o wins over the environment
    capsys.readouterr()
    assert main(["export", JOB, "--format", "tensorboard", "-o", str(tmp_path / "tb")]) == 0
    assert calls[-1] == (JOB, "tensorboard", tmp_path / "tb")
    assert capsys.readouterr().err.startswith(f"wrote 7 scalars as tensorboard to {tmp_path}")
    assert main(["export", JOB, "--format", "xml"]) == 2  # click's choice
    assert len(calls) == 3


def test_no_color_on_the_group_or_the_command_turns_styles_off(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import re
    import sys

    from services import auth

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    auth.create_key("alice")

    def keys_list(*words: str) -> str:
        screen = Terminal()
        monkeypatch.setattr(sys, "stdout", screen)
        assert main(list(words)) == 0
        return screen.getvalue()

    style = re.compile(r"\x1b\[[0-9;]*m")
    assert style.search(keys_list("keys", "list"))  # a terminal: the header is bold
    for words in (("--no-color", "keys", "list"), ("keys", "list", "--no-color")):
        text = keys_list(*words)
        assert "alice" in text and not style.search(text), words
    assert style.search(keys_list("keys", "list"))  # the flag does not outlive its call
