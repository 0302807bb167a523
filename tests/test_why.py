""" "My drift event arrived an hour ago; why did nothing retrain?" answered by event id: GET
/api/decisions?event_id= (and ?outcome=, ?since=), and `retrain why EVENT_ID`, including for an event
about a workspace the service is not configured for (a decision that concerns no model). On SQLite;
the ledger's own trail and an id longer than a record keeps on both ledgers."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from handlers.why import why
from tests.builders import drift_event, ours, run_event
from tests.ledgers import LedgerSpec
from tests.world import MODEL, App, World

FOREIGN = "/subscriptions/x/resourceGroups/y/providers/Microsoft.MachineLearningServices/workspaces/theirs"


def listed(app: App, query: str) -> list[dict[str, Any]]:
    status, _, raw = app.client.host.dispatch("GET", f"/api/decisions?{query}", {}, b"")
    assert status == 200, raw
    return list(json.loads(raw)["decisions"])


def test_decisions_are_found_by_event_id_whatever_model_they_concern_or_none(app: App) -> None:
    app.deliver("/api/events", [drift_event(event_id="mine"), drift_event(event_id="theirs", topic=FOREIGN)])
    app.deliver("/api/events", [drift_event(event_id="later")])

    [foreign] = listed(app, "event_id=theirs")
    assert (foreign["model"], foreign["outcome"]) == (None, "skipped")
    assert "is not a workspace this service is configured for" in foreign["reason"]
    [mine] = listed(app, "event_id=mine")
    assert (mine["model"], mine["outcome"]) == (MODEL, "planned")
    assert listed(app, "event_id=never-sent") == []
    assert [d["trigger"]["event_id"] for d in listed(app, "outcome=skipped")] == ["later", "theirs"]  # cooldown
    assert [d["trigger"]["event_id"] for d in listed(app, f"model={MODEL}&event_id=later")] == ["later"]


def test_since_narrows_the_trail_to_what_was_decided_from_then_on(app: App) -> None:
    app.deliver("/api/events", [drift_event(event_id="first")])
    assert len(listed(app, "since=2026-11-25T10:00:00Z")) == 1  # the tests' clock stands at 10:00
    assert listed(app, "since=2026-11-25T10:00:01Z") == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("outcome=maybe", "outcome='maybe': give one of"),
        ("since=yesterday", "give an ISO 8601 time"),
        ("since=2026-12-01T00:00:00", "give the time zone"),
    ],
)
def test_bad_filters_are_a_400_saying_what_to_send(app: App, query: str, says: str) -> None:
    status, _, raw = app.client.host.dispatch("GET", f"/api/decisions?{query}", {}, b"")
    assert status == 400 and says in json.loads(raw)["error"]


def test_retrain_why_prints_the_decision_and_its_reason_for_a_foreign_workspace_event(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    from function_app.cli import main as cli

    app.deliver("/api/events", [drift_event(event_id="theirs", topic=FOREIGN)])
    assert cli(["why", "theirs"]) == 0
    out = capsys.readouterr().out
    assert "decided  2026-11-25T10:00:00.000Z  none skipped  model=-" in out
    assert f"event source '{FOREIGN}' is not a workspace this service is configured for" in out
    assert cli(["why", "nothing-like-it"]) == 1
    assert "no decision is recorded for event nothing-like-it" in capsys.readouterr().out


def test_why_follows_a_retrain_to_its_run_s_deploy_and_the_rollout_steps(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec)
    [retrain] = world.deliver(drift_event(event_id="drift-why")).decisions
    job = str(retrain.job["name"])  # type: ignore[index]
    [deploy] = world.deliver(run_event(run_id=job, tags=ours(decision=retrain.id))).decisions
    world.actions.provisioning[str(deploy.job["name"])] = "Succeeded"  # type: ignore[index]
    [entry] = world.reconcile().rollouts
    assert entry["state"] == "stepped"
    world.clock.advance(minutes=1)
    world.deliver(drift_event(event_id="drift-later"))  # inside the cooldown

    [answer] = why(world.ledger, "drift-why")
    assert answer.decision.id == retrain.id and answer.guard is None
    assert [r.action for r in answer.led_to] == ["deploy", "rollout"]
    assert answer.led_to[0].id == deploy.id and answer.led_to[1].details["step"] == 0
    [refused] = why(world.ledger, "drift-later")
    assert refused.guard is not None and refused.guard["guard"] in ("in_flight", "cooldown")
    assert json.loads(json.dumps([a.to_dict() for a in why(world.ledger, "drift-why")]))


@pytest.mark.both_ledgers
def test_the_trail_by_outcome_and_since_works_on_the_ledger_itself(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec)
    world.deliver(drift_event(event_id="a"))
    world.clock.advance(hours=1)
    world.deliver(drift_event(event_id="b"))
    start = world.clock() - timedelta(minutes=1)
    assert [r.trigger["event_id"] for r in world.ledger.decisions(since=start)] == ["b"]
    assert [r.trigger["event_id"] for r in world.ledger.decisions(MODEL, outcome="submitted")] == ["a"]
    assert [r.trigger["event_id"] for r in world.ledger.decisions(outcome="skipped", event_id="b")] == ["b"]


@pytest.mark.both_ledgers
@pytest.mark.parametrize("length", [2_001, 5_000, 60_000])
def test_an_event_id_longer_than_a_record_keeps_is_still_found_by_its_id(
    app: App, length: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record keeps a long id cut, with its digest; looking up the whole id finds it, and only it."""
    from urllib.parse import quote

    from function_app.cli import main as cli

    long_id = "evt-" + "x" * (length - 5) + "1"
    twin = long_id[:-1] + "2"  # the same first 2,000 characters: another event
    assert app.deliver("/api/events", [drift_event(event_id=long_id)])[0] == 200
    app.deliver("/api/events", [drift_event(event_id=twin, monitor="nobody")])
    [found] = listed(app, f"event_id={quote(long_id)}")
    kept = found["trigger"]["event_id"]
    assert found["action"] == "retrain" and len(kept) <= 2_000 and f"[cut: {length} characters, sha256 " in kept
    assert [d["action"] for d in listed(app, f"event_id={quote(twin)}")] == ["none"]
    assert cli(["why", long_id]) == 0
    assert "retrain planned" in capsys.readouterr().out
