"""The `retrain` command line as a user runs it (a subprocess): bad input is one line saying what is
wrong and exit 2, never a traceback; reading commands never create a ledger."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import retrain_cli

retrain = retrain_cli


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr[-2000:]
    return out.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[]", "give an event object or a non-empty JSON array of event objects"),
        ("[1, 2]", "give an event object or a non-empty JSON array of event objects"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
        ("{nope", "is not valid JSON"),
    ],
)
@pytest.mark.parametrize("command", ["explain", "send"])
def test_an_event_file_that_holds_no_events_is_one_line_and_exit_2(
    tmp_path: Path, command: str, content: str, says: str
) -> None:
    event = tmp_path / "event.json"
    event.write_text(content)
    extra = ["--url", "http://127.0.0.1:9"] if command == "send" else []
    err = one_line_error(retrain(command, str(event), *extra, env={"RETRAIN_SQLITE_PATH": str(tmp_path / "l.db")}))
    assert says in err and str(event) in err


@pytest.mark.parametrize("command", [["decisions"], ["why", "some-event"], ["reconcile"]])
def test_a_directory_as_the_ledger_path_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    err = one_line_error(retrain(*command, env={"RETRAIN_SQLITE_PATH": str(tmp_path)}))
    assert f"RETRAIN_SQLITE_PATH={tmp_path} is a directory" in err


@pytest.mark.parametrize("command", [["decisions"], ["why", "some-event"]])
def test_reading_a_ledger_that_is_not_there_says_so_and_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere" / "ledger.db"
    err = one_line_error(retrain(*command, env={"RETRAIN_SQLITE_PATH": str(missing)}))
    assert f"no ledger at {missing}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("limit", ["-1", "0", "1001", "²"])
def test_decisions_limit_out_of_range_is_refused(tmp_path: Path, limit: str) -> None:
    out = retrain("decisions", "--limit", limit, env={"RETRAIN_SQLITE_PATH": str(tmp_path / "l.db")})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --limit" in out.stderr and "give a whole number from 1 to 1000" in out.stderr


def test_help_lists_every_command_without_a_traceback() -> None:
    out = retrain("--help", env={})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "promote" in out.stdout and "replay" in out.stdout
