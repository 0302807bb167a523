"""Property tests of everything that arrives: whatever the bytes, parsing raises only the documented
error (InvalidInput), every accepted event yields exactly one recorded decision and is done, and no
manual body gets anything but a documented status with a JSON error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.errors import InvalidInput
from handlers.signals import Envelope, Trigger, parse_alert, parse_events
from tests.builders import ML, WORKSPACE
from tests.conftest import Client
from tests.ledgers import LedgerSpec
from tests.world import MODEL, World

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
)
DATA_KEYS = [
    "DataDriftName",
    "DataDriftId",
    "DriftCoefficient",
    "TargetDatasetId",
    "runId",
    "runStatus",
    "runTags",
    "runProperties",
    "runType",
    "experimentName",
    "ModelName",
    "ModelVersion",
    "ModelTags",
    "ServiceName",
    "ModelIds",
    "validationCode",
]
TAG_VALUES = st.dictionaries(
    st.sampled_from(["retrain_decision", "retrain_model", "azureml_modelmonitor_threshold_breached", "r2_score", "x"]),
    st.text(max_size=40) | st.sampled_from(["The signal 'churn-data-drift' has failed", MODEL, "0.9"]),
    max_size=4,
)
data = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(DATA_KEYS, json_values),
        "DataDriftName": st.sampled_from(["myDriftMonitor", "churn-monitor", "other"]) | st.text(max_size=20),
        "runTags": TAG_VALUES | json_values,
        "runStatus": st.sampled_from(["Completed", "Failed", "Running", "Canceled"]) | st.text(max_size=10),
        "experimentName": st.sampled_from(["diabetes-retrain", "churn-monitor", "x"]),
    },
)
EVENT_TYPES = [ML + t for t in ("DatasetDriftDetected", "RunCompleted", "RunStatusChanged", "ModelRegistered")]
events = st.fixed_dictionaries(
    {"data": data | json_values},
    optional={
        "id": st.text(max_size=60) | json_values,
        "eventType": st.sampled_from([*EVENT_TYPES, ML + "ModelDeployed", "Other.Type"]) | json_values,
        "topic": st.sampled_from([WORKSPACE, "/subscriptions/x/other"]) | json_values,
        "specversion": st.just("1.0"),
        "subject": json_values,
    },
)


@FUZZ
@given(raw=st.binary(max_size=300) | st.builds(lambda v: json.dumps(v).encode(), json_values))
def test_any_webhook_body_parses_or_raises_only_invalid_input(raw: bytes) -> None:
    try:
        items = parse_events(raw)
    except InvalidInput as exc:
        problem = str(exc)
        assert problem.startswith("body") or "event" in problem, problem
        return
    assert items and all(isinstance(i, Envelope | InvalidInput) for i in items)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(LedgerSpec("sqlite", str(tmp_path_factory.mktemp("fuzz") / "ledger.db")))


@FUZZ
@given(raw=events)
def test_every_accepted_event_yields_exactly_one_recorded_decision_and_is_done(
    world: World, raw: dict[str, Any]
) -> None:
    raw = {**raw, "id": f"fuzz-{uuid.uuid4()}"} if isinstance(raw.get("id"), str) and raw["id"] else raw
    try:
        [item] = parse_events(json.dumps([raw]))
    except InvalidInput:
        return
    if isinstance(item, InvalidInput):
        assert "event" in str(item)
        return
    trigger = Trigger(item.source, item.event_id, item.event_type)
    seen_before = world.ledger.event_status(trigger) is not None  # an id that an earlier example sent too
    result = world.service.handle_envelope(item)
    if result.status == "validation":
        return
    assert result.status == ("duplicate" if seen_before else "processed")
    assert len(result.decisions) == 1
    [rec] = result.decisions
    assert world.ledger.event_status(trigger) == ("done", [rec.id])
    assert world.ledger.get_decision(rec.id) == rec
    assert rec.reason and rec.outcome in ("planned", "skipped", "failed", "submitted")
    again = world.service.handle_envelope(item)
    assert again.status == "duplicate" and again.decisions == [rec]


essentials = st.fixed_dictionaries(
    {},
    optional={
        "alertRule": st.sampled_from(["diabetes-feature-drift", "cpu-high"]) | json_values,
        "alertId": st.builds(lambda u: f"/subscriptions/x/providers/Microsoft.AlertsManagement/alerts/{u}", st.uuids())
        | json_values,
        "monitorCondition": st.sampled_from(["Fired", "Resolved"]) | json_values,
        "alertTargetIDs": st.lists(st.sampled_from([WORKSPACE, "/subscriptions/x/other"]) | st.text(), max_size=3)
        | json_values,
        "severity": json_values,
        "signalType": json_values,
    },
)
alerts = (
    st.fixed_dictionaries(
        {
            "schemaId": st.sampled_from(["azureMonitorCommonAlertSchema", "other"]),
            "data": st.fixed_dictionaries({"essentials": essentials}),
        }
    )
    | json_values
)


@FUZZ
@given(raw=alerts)
def test_any_alert_parses_or_raises_only_invalid_input_and_an_accepted_one_is_decided_once(
    world: World, raw: Any
) -> None:
    try:
        alert = parse_alert(json.dumps(raw))
    except InvalidInput as exc:
        problem = str(exc)
        assert "alert" in problem or "schemaId" in problem or "essentials" in problem, problem
        return
    result = world.service.handle(alert)
    assert result.status in ("processed", "duplicate") and len(result.decisions) == 1


manual_bodies = st.dictionaries(
    st.sampled_from(["reason", "dry_run", "force", "inputs", "version", "other"]),
    json_values
    | st.dictionaries(st.sampled_from(["learning_rate", "max_epochs", "training_data"]), json_values, max_size=3),
    max_size=5,
)


@FUZZ
@given(body=manual_bodies, action=st.sampled_from(["retrain", "deploy"]), model=st.sampled_from([MODEL, "nope"]))
def test_any_manual_body_gets_a_documented_status_and_strict_json(
    client: Client, body: dict[str, Any], action: str, model: str
) -> None:
    status, _, raw = client.host.dispatch("POST", f"/api/models/{model}/{action}", {}, json.dumps(body).encode())
    reply = json.loads(raw, parse_constant=lambda name: pytest.fail(f"reply holds {name}"))
    assert status in (200, 202, 400, 403, 404, 409, 422), (status, reply)
    if status >= 400:
        assert isinstance(reply["error"], str) and reply["error"]


def test_the_fuzz_world_is_on_a_fresh_ledger(tmp_path: Path) -> None:
    """The properties above share one ledger across examples: distinct event ids keep them apart."""
    assert World(LedgerSpec("sqlite", str(tmp_path / "l.db"))).ledger.decisions() == []


query_values = (
    st.text(max_size=40)
    | st.integers(min_value=-(10**30), max_value=10**30).map(str)
    | st.datetimes(timezones=st.timezones() | st.none()).map(lambda t: t.isoformat())
    | st.sampled_from(["²", "٣", "1e3", " 5", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
)


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["limit", "since", "outcome", "model", "event_id"]), query_values))
def test_any_decisions_query_gets_200_or_a_400_saying_what_is_wrong(client: Client, query: dict[str, str]) -> None:
    from urllib.parse import urlencode

    status, _, raw = client.host.dispatch("GET", f"/api/decisions?{urlencode(query)}", {}, b"")
    reply = json.loads(raw)
    assert status in (200, 400), (status, reply)
    if status == 400:
        assert isinstance(reply["error"], str) and len(reply["error"]) < 300
