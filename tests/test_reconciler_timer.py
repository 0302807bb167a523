"""The reconciler's timer function and the `retrain reconcile` command: one pass each."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from function_app import cli, runtime
from function_app.settings import Settings
from handlers import guards
from handlers.errors import PermanentError, TransientError
from handlers.ports import Ledger
from handlers.retrainer import Retrainer
from tests.builders import MODEL
from tests.fakes import Clock


class LedgerThatFails:
    """A ledger whose listing fails with ``error``; the rest is the real one."""

    def __init__(self, inner: Ledger, error: BaseException) -> None:
        self.inner, self.error = inner, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list_models(self) -> Any:
        raise self.error


def timer_function() -> Callable[[TimerRequest], None]:
    """The registered timer function, as the worker indexes it (a fresh app: indexing runs once per app)."""
    from function_app.triggers import reconciler

    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(reconciler.bp)
    [fn] = app.get_functions()
    assert fn.get_function_name() == "reconcile"
    user: Callable[[TimerRequest], None] = fn.get_user_function()
    return user


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Retrainer]:
    """The worker's service as Settings build it (SQLite, dry run), with a stale reservation to resume."""
    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "ledger.db"))
    clock = Clock()
    built = runtime.build(Settings.from_env(), clock=clock)
    built.ledger.update_model(MODEL, lambda s: guards.reserve(s, guards.ROLLOUT, "de-lost", clock(), None, None))
    clock.advance(minutes=5)
    runtime.set_retrainer(built)
    yield built
    runtime.set_retrainer(None)


def test_the_timer_runs_one_pass(service: Retrainer) -> None:
    timer_function()(TimerRequest(past_due=True))
    assert service.ledger.get_model(MODEL).flights == {}
    assert service.ledger.get_decision("de-lost").outcome == "failed"  # type: ignore[union-attr]


def test_a_transient_failure_is_logged_and_left_to_the_next_tick(
    service: Retrainer, caplog: pytest.LogCaptureFixture
) -> None:
    service.reconciler.ledger = LedgerThatFails(service.ledger, TransientError("ledger busy"))
    timer_function()(TimerRequest())
    assert "the next tick retries: ledger busy" in caplog.text


@pytest.mark.parametrize("error", [PermanentError("table missing"), RuntimeError("a bug")])
def test_any_other_failure_propagates(service: Retrainer, error: Exception) -> None:
    service.reconciler.ledger = LedgerThatFails(service.ledger, error)
    with pytest.raises(type(error), match=str(error)):
        timer_function()(TimerRequest())


def test_the_service_keeps_records_for_the_retention_the_settings_say(tmp_path: Path) -> None:
    settings = Settings.from_env({"RETRAIN_SQLITE_PATH": str(tmp_path / "l.db"), "RETRAIN_RETENTION_DAYS": "7"})
    assert runtime.build(settings).reconciler.retention.days == 7


def test_the_job_grace_comes_from_the_settings_and_must_be_positive(tmp_path: Path) -> None:
    env = {"RETRAIN_SQLITE_PATH": str(tmp_path / "l.db"), "RETRAIN_JOB_GRACE_MINUTES": "45"}
    assert runtime.build(Settings.from_env(env)).reconciler.job_grace == timedelta(minutes=45)
    unset = Settings.from_env({**env, "RETRAIN_JOB_GRACE_MINUTES": ""})
    assert runtime.build(unset).reconciler.job_grace == timedelta(minutes=15)
    with pytest.raises(ValueError, match="RETRAIN_JOB_GRACE_MINUTES='0': must be a positive number"):
        Settings.from_env({**env, "RETRAIN_JOB_GRACE_MINUTES": "0"})


def test_retrain_reconcile_prints_the_report_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "cli.db"))
    settings = Settings.from_env()
    ledger = runtime.make_ledger(settings, runtime.make_credential(settings))
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)  # the command runs on the real clock
    ledger.update_model(MODEL, lambda s: guards.reserve(s, guards.RETRAIN, "re-lost", long_ago, None, None))

    assert cli.main(["reconcile"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert [f["decision"] for f in report["found"]] == ["re-lost"]
    assert [r["id"] for r in report["released"]] == ["re-lost"] and report["resumed"] == []
    assert ledger.get_model(MODEL).flights == {}
