"""``retrain backtest``: a recorded day of events replayed through a draft policy.

The day is generated: real events (v2 monitor breaches, run completions, an alert, a registration)
driven through the service on a clock, on a SQLite ledger, under the example policy. The draft
differs in two ways: a 2h cooldown for the regression model instead of 6h, and no alert rule that
retrains it. The backtest must report exactly what that changes, and nothing else.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest

from function_app import runtime
from function_app.cli import main as cli
from handlers import recorded
from handlers.policy_file import parse_policy
from handlers.signals import MANUAL, OPERATOR, ManualRequest, OperatorRequest, Signal, Trigger
from tests.builders import (
    ML,
    MODEL,
    SCOPE,
    WORKSPACE,
    blob_event,
    breach_event,
    event,
    ours,
    promotion_event,
    run_event,
)
from tests.conftest import REPO
from tests.fakes import Clock, RecordingActions
from tests.ledgers import LedgerSpec
from tests.world import World

DAY = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
CHURN = "churn-classifier"
EXAMPLE = (REPO / "examples" / "policy.yaml").read_text()
COOLDOWN = "      cooldown: 6h\n      daily_budget: 3\n"  # the regression model's own retrain limits
ALERTS = "    alerts: [diabetes-feature-drift]      # Azure Monitor alert rules (POST /api/alerts) that retrain it\n"
ALERT: dict[str, Any] = json.loads((REPO / "examples" / "events" / "alert.common-schema.json").read_text())


def draft_text() -> str:
    assert COOLDOWN in EXAMPLE and ALERTS in EXAMPLE
    return EXAMPLE.replace(COOLDOWN, COOLDOWN.replace("6h", "2h")).replace(ALERTS, "")


class Day:
    """The recorded day: ``world`` (its ledger file at ``path``), and the clock at the day's end."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "ledger.db"
        actions = RecordingActions(champion_metrics={"r2_score": "0.5", "auc": "0.5"})
        self.world = World(
            LedgerSpec("sqlite", str(self.path)), policy=parse_policy(EXAMPLE), actions=actions, clock=Clock(DAY)
        )

    def at(self, hours: float) -> None:
        self.world.clock.now = DAY + timedelta(hours=hours)

    def breach(
        self, event_id: str, hours: float, signal: str = "feature-drift", monitor: str = "diabetes-monitor"
    ) -> Any:
        self.at(hours)
        return self.world.deliver(breach_event(signal, monitor, event_id=event_id)).decisions

    def run_ended(self, event_id: str, hours: float, retrain: Any, status: str | None = None) -> Any:
        """The run of the recorded ``retrain`` decision ends: its event, with the tags the job carries."""
        self.at(hours)
        job = str(retrain.job["name"])
        tags = ours(str(retrain.model), retrain.id)
        experiment = self.world.actions.jobs[job].experiment
        return self.world.deliver(run_event(job, experiment, tags, status=status, event_id=event_id)).decisions

    def alert(self, hours: float) -> Any:
        self.at(hours)
        return self.world.worker.alert(json.dumps(ALERT)).decisions


@pytest.fixture
def day(tmp_path: Path) -> Day:
    """A day of events under the example policy (what was recorded is asserted as it goes)."""
    d = Day(tmp_path)
    [first] = d.breach("e01", 0)  # a breach: the regression model retrains
    assert first.outcome == "submitted"
    [again] = d.breach("e02", 0.5)  # its run is still going
    assert again.details["guard"] == "in_flight"
    [deploy] = d.run_ended("e03", 1, first)  # the run ends: its slot is freed, its candidate deployed
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted")
    [churn] = d.breach("e04", 2, "churn-data-drift", "churn-monitor")  # the churn model retrains
    assert churn.outcome == "submitted"
    [cooling] = d.breach("e05", 3)  # within the 6h cooldown of 00:00
    assert cooling.details["guard"] == "cooldown"
    [alerted] = d.alert(4)  # an alert rule the regression model listens to: cooldown too
    assert (alerted.action, alerted.details["guard"]) == ("retrain", "cooldown")
    [churn_again] = d.breach("e07", 5, "churn-data-drift", "churn-monitor")  # churn's run has not ended
    assert churn_again.details["guard"] == "in_flight"
    [second] = d.breach("e08", 7)  # past the cooldown: the second retrain of the day
    assert second.outcome == "submitted"
    [failed] = d.run_ended("e09", 8, second, status="Failed")  # its run fails: nothing to deploy
    assert (failed.action, failed.outcome) == ("none", "skipped")
    [late] = d.breach("e10", 10)  # in the cooldown of 07:00
    assert late.details["guard"] == "cooldown"
    d.at(11)  # a registration, recorded for the audit trail
    [registered] = d.world.deliver(event("ModelRegistered", {"modelName": "other", "modelVersion": "1"})).decisions
    assert registered.model is None
    d.at(12)  # an operator rolls the candidate of 01:00 back: no policy decides that
    operator = Trigger("cli", "op-1", "ManualRequest.rollback", (("kind", "command line"),), channel=OPERATOR)
    assert d.world.worker.operate(OperatorRequest(operator, MODEL, "rollback", "wrong")).action == "rollback"
    d.at(13)  # a claim that kept no signal (as the ledger kept them before it did)
    old = Trigger(WORKSPACE, "e-old", ML + "RunStatusChanged")
    d.world.ledger.claim_event(old, d.world.clock.now, timedelta(seconds=60))
    d.world.ledger.finish_event(old, [], d.world.clock.now)
    d.at(15)  # the stop switch for the regression model
    switch = Trigger("cli", "sw-1", "ManualRequest.freeze", (("kind", "command line"),), channel=OPERATOR)
    d.world.worker.freeze(True, switch, "release week", models=[MODEL])
    [frozen] = d.breach("e14", 16)
    assert frozen.details["guard"] == "frozen"
    d.at(23)
    return d


NOTES = [
    "note: the guard state starts empty at the window's start (no cooldown, budget or flight from before it)",
    "note: a retrain the draft starts holds its slot until its run's recorded completion, or for its pipeline's mean "
    "recorded duration when that run was never recorded",
    "note: deploys meet the freezes only and count as started before the candidate gate (it needs the candidate's "
    "metrics from the workspace); a rollout's single flight and the alerts' rollout guards are not replayed",
    "note: a retrain's checks before submission (a veto signal in its monitor run, the worthiness of the champion's "
    "data) are judged again on what was read for the same decision when it was recorded; one whose checks were never "
    "read (a guard refused it first, or the recorded policy had no such check) counts as started",
    "note: retrains the reconciler started (model age, new data-asset versions, settled bursts of new blobs) are "
    "replayed at the moments they were recorded, through the draft's rules and guards; one the draft would start at "
    "another moment (a shorter max_age or settle, a rule it adds) is not replayed: what the reconciler would have read "
    "then was never read",
]
ALERT_ID = "0f0e0d0c-0000-4000-8000-00000000a1e7:fired"
# the churn model's lines, which neither draft changes (its run never ended: its duration is unknown)
CHURN_THE_SAME = [
    "model churn-classifier",
    "  recorded  retrain 1 started, 1 refused (in_flight 1); deploy none; skipped 0",
    "  draft     retrain 1 started, 1 refused (in_flight 1); deploy none; skipped 0",
    "  compute   recorded 1 run(s), unknown (no recorded run of churn-train@latest); "
    "draft 1 run(s), unknown (no recorded run of churn-train@latest)",
    "  differences: 0",
]


def head(tmp_path: Path) -> list[str]:
    """The report's first lines for the day: the window, what was replayed, the pipelines' durations."""
    return [
        f"backtest of {tmp_path / 'draft.yaml'} over 2026-12-04T23:00:00.000Z .. 2026-12-05T23:00:00.000Z: "
        "12 event(s) replayed, 1 not replayable, 1 operator request(s), 0 reconciler start(s)",
        "  not replayable (no signal kept: recorded before this version, or too large): e-old",
        "pipeline durations (mean of recorded runs): diabetes-retrain:3 1h",
    ]


@pytest.fixture
def backtest(day: Day, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``retrain backtest --policy FILE ARGS`` on the day's ledger at the day's end: (exit code, stdout, stderr)."""
    monkeypatch.setenv("RETRAIN_LEDGER", "sqlite")
    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(day.path))
    monkeypatch.setattr(runtime, "utcnow", day.world.clock)  # the clock the command reads: the day's end

    def run(text: str | None, *args: str) -> tuple[int, str, str]:
        policy = tmp_path / "draft.yaml"
        if text is not None:
            policy.write_text(text)
        try:
            code = cli(["backtest", "--policy", str(policy), *args])
        except SystemExit as exc:  # argparse refused an argument
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_the_recorded_policy_replayed_through_itself_differs_in_nothing(backtest: Any, tmp_path: Path) -> None:
    code, out, _ = backtest(EXAMPLE, "--since", "1d")
    assert code == 0
    assert out.splitlines() == [
        *head(tmp_path),
        "model (no model)",
        "  recorded  retrain none; deploy none; skipped 1",
        "  draft     retrain none; deploy none; skipped 1",
        "  differences: 0",
        *CHURN_THE_SAME,
        "model sklearn_regression_model",
        "  recorded  retrain 2 started, 5 refused (cooldown 3, frozen 1, in_flight 1); deploy 1 started; skipped 1",
        "  draft     retrain 2 started, 5 refused (cooldown 3, frozen 1, in_flight 1); deploy 1 started; skipped 1",
        "  compute   recorded 2 run(s), 2h; draft 2 run(s), 2h",
        "  differences: 0",
        *NOTES,
    ]


def test_a_draft_with_a_shorter_cooldown_and_no_alert_rule_differs_exactly_there(backtest: Any, tmp_path: Path) -> None:
    """2h instead of 6h: the breach of 03:00 retrains (the run of 00:00 ended at 01:00), the one of 07:00 too,
    so that of 10:00 meets the daily budget (3) instead of the cooldown; the alert of 04:00 retrains nothing."""
    code, out, _ = backtest(draft_text(), "--since", "1d")
    assert code == 0
    assert out.splitlines() == [
        *head(tmp_path),
        "model (no model)",
        "  recorded  retrain none; deploy none; skipped 1",
        "  draft     retrain none; deploy none; skipped 2",
        "  differences: 1",
        f"    2026-12-05T04:00:00.000Z  {ALERT_ID} (Alert)  recorded: nothing  draft: skipped",
        *CHURN_THE_SAME,
        "model sklearn_regression_model",
        "  recorded  retrain 2 started, 5 refused (cooldown 3, frozen 1, in_flight 1); deploy 1 started; skipped 1",
        "  draft     retrain 3 started, 3 refused (budget 1, frozen 1, in_flight 1); deploy 1 started; skipped 1",
        "  compute   recorded 2 run(s), 2h; draft 3 run(s), 3h",
        "  differences: 3",
        "    2026-12-05T03:00:00.000Z  e05 (RunStatusChanged)  recorded: retrain refused (cooldown)  draft: retrain started",
        f"    2026-12-05T04:00:00.000Z  {ALERT_ID} (Alert)  recorded: retrain refused (cooldown)  draft: nothing",
        "    2026-12-05T10:00:00.000Z  e10 (RunStatusChanged)  recorded: retrain refused (cooldown)  "
        "draft: retrain refused (budget)",
        *NOTES,
        # e05, refused by the cooldown when recorded: its worthiness was never read, so it counts as started
        "note: 1 retrain(s) the draft starts have checks nothing was read for when recorded: counted as started",
    ]
    page = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")  # its sample is this very output
    sample = page.split("## Backtesting a draft policy", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    assert sample.splitlines() == out.replace(str(tmp_path / "draft.yaml"), "draft.yaml").splitlines()


def test_the_json_report_has_each_model_s_counts_compute_and_differences(backtest: Any) -> None:
    code, out, _ = backtest(draft_text(), "--since", "1d", "--json")
    report = json.loads(out)
    assert code == 0
    assert sorted(report) == [
        "durations",
        "models",
        "notes",
        "operator_requests",
        "policy",
        "reconciler_starts",
        "replayed",
        "since",
        "truncated",
        "unchecked",
        "unreplayable",
        "until",
    ]
    assert (report["replayed"], report["unreplayable"], report["operator_requests"]) == (12, ["e-old"], 1)
    assert report["durations"] == {"diabetes-retrain:3": 3600}
    assert [m["model"] for m in report["models"]] == ["(no model)", CHURN, MODEL]
    model = report["models"][2]
    assert model["draft"] == {
        "deploy started": 1,
        "retrain refused": 3,
        "retrain refused budget": 1,
        "retrain refused frozen": 1,
        "retrain refused in_flight": 1,
        "retrain started": 3,
        "skipped": 1,
    }
    assert model["compute"] == {
        "recorded": {"runs": 2, "seconds": 7200, "unknown_pipelines": []},
        "draft": {"runs": 3, "seconds": 10800, "unknown_pipelines": []},
    }
    assert report["models"][1]["compute"]["draft"] == {
        "runs": 1,
        "seconds": None,
        "unknown_pipelines": ["churn-train@latest"],
    }
    first = model["differences"][0]
    assert set(first) == {"at", "event_id", "event_type", "recorded", "draft"}
    assert (first["event_id"], first["event_type"]) == ("e05", ML + "RunStatusChanged")
    assert first["recorded"] == [
        {
            "action": "retrain",
            "result": "refused",
            "guard": "cooldown",
            "reason": "model is in cooldown until 2026-12-05T06:00:00.000Z (cooldown 6h after the retrain started at "
            "2026-12-05T00:00:00.000Z)",
        }
    ]
    assert [(o["action"], o["result"], o["guard"]) for o in first["draft"]] == [("retrain", "started", None)]


def test_the_completion_of_a_run_the_draft_would_not_have_started_is_a_skip_that_says_so(backtest: Any) -> None:
    """A draft in which no monitor signal retrains the regression model: its recorded runs would not exist."""
    deaf = EXAMPLE.replace("signals: [feature-drift]", "signals: [prediction-drift]")
    code, out, _ = backtest(deaf, "--json")
    model = next(m for m in json.loads(out)["models"] if m["model"] == MODEL)
    completion = next(d for d in model["differences"] if d["event_id"] == "e03")
    assert code == 0
    assert [(o["action"], o["result"]) for o in completion["recorded"]] == [("deploy", "started")]
    [skip] = completion["draft"]
    assert (skip["action"], skip["result"]) == ("none", "skipped")
    assert "would not exist: the draft would not have started retrain re-" in skip["reason"]
    assert model["draft"]["retrain started"] == 1  # the alert of 04:00 (its rule still retrains the model)
    # that run was never recorded: estimated at the pipeline's mean recorded duration
    assert model["compute"]["draft"] == {"runs": 1, "seconds": 3600, "unknown_pipelines": []}


@pytest.mark.parametrize(
    ("policy", "args", "says"),
    [
        (None, (), "draft.yaml: no such file; give the path of the draft policy to replay"),
        ("models: [", (), "draft.yaml: line 1, column 10: not valid YAML"),
        (EXAMPLE.replace("cooldown: 12h", "cooldown: soon"), (), "models.churn-classifier.retrain.cooldown"),
        (EXAMPLE, ("--since", "3x"), "'3x' is not how far back to replay; write a duration such as 30d"),
        (EXAMPLE, ("--since", "0d"), "'0d' is not how far back to replay"),
    ],
)
def test_bad_input_is_one_clear_error_naming_what_and_how_to_fix_it(
    backtest: Any, policy: str | None, args: tuple[str, ...], says: str
) -> None:
    code, out, err = backtest(policy, *args)
    assert (code, out) == (2, "")
    assert says in err


def test_every_kind_of_signal_round_trips_through_what_the_ledger_keeps() -> None:
    from handlers.envelopes import parse_alert, parse_body, to_signal

    events = [
        breach_event(event_id="b"),
        run_event("r", "x", ours(), {"azureml.pipelinerunid": "p"}, event_id="r"),
        event("ModelRegistered", {"modelName": "m", "modelVersion": 2, "modelTags": {"a": "b"}}, event_id="g"),
        event("ModelDeployed", {"serviceName": "s", "modelIds": "m:1,n:2"}, event_id="d"),
        event("DatasetDriftDetected", {"DataDriftName": "mon", "DriftCoefficient": 0.5}, event_id="v1"),
        event("Something.Else", {}, event_id="i"),
        blob_event("diabetes/a.csv", event_id="bl"),
        promotion_event(),
    ]
    signals: list[Any] = [to_signal(env, SCOPE) for env in parse_body(json.dumps(events))]
    signals.append(parse_alert(json.dumps(ALERT)))
    caller = (("kind", "user"), ("id", "u1"))
    trigger = Trigger("http", "k1", "ManualRequest.retrain", caller, "req-digest", MANUAL)
    signals.append(ManualRequest(trigger, MODEL, "retrain", "why", True, False, {"max_epochs": 3}))
    assert sorted({type(s).__name__ for s in signals}) == sorted(t.__name__ for t in get_args(Signal))
    for signal in signals:
        kept = recorded.encode(signal)
        assert kept is not None and recorded.decode(kept) == signal


@pytest.mark.parametrize(
    ("kept", "says"),
    [
        ('{"type": "Unknown", "fields": {}}', "signal type 'Unknown' is not one this version knows"),
        ('{"type": "Ignored", "fields": {"colour": 1}}', "signal type Ignored has no field 'colour'"),
        ("[]", "not a recorded signal"),
    ],
)
def test_a_kept_signal_this_version_cannot_read_is_a_value_error_saying_why(kept: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        recorded.decode(kept)


def test_a_draft_that_classes_the_drift_signal_retrain_now_starts_past_the_cooldown_but_not_past_the_budget(
    backtest: Any,
) -> None:
    listens = "      signals: [feature-drift]            # SDK v2 model-monitoring signal names\n"
    assert listens in EXAMPLE
    draft = EXAMPLE.replace(listens, listens + "      classes: {feature-drift: retrain_now}\n")
    code, out, _ = backtest(draft, "--since", "1d")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("model sklearn_regression_model")
    assert lines[start + 1 : start + 7] == [
        "  recorded  retrain 2 started, 5 refused (cooldown 3, frozen 1, in_flight 1); deploy 1 started; skipped 1",
        "  draft     retrain 3 started, 4 refused (budget 1, cooldown 1, frozen 1, in_flight 1); deploy 1 started; "
        "skipped 1",
        "  compute   recorded 2 run(s), 2h; draft 3 run(s), 3h",
        "  differences: 2",
        "    2026-12-05T03:00:00.000Z  e05 (RunStatusChanged)  recorded: retrain refused (cooldown)  draft: retrain started",
        "    2026-12-05T10:00:00.000Z  e10 (RunStatusChanged)  recorded: retrain refused (cooldown)  draft: retrain refused (budget)",
    ]
