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

from handlers.envelopes import Envelope, parse_alert, parse_events
from handlers.errors import InvalidInput
from handlers.signals import Trigger
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


# --------------------------------------------------------------------------- keys and claim namespaces

RACE = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
api_keys = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40)
FORGED_TYPES = ["ManualRequest.retrain", "ManualRequest.promote", "AzureMonitor.Alert", *EVENT_TYPES]
# a reason any caller may send: one line of plain text (control characters and bidi overrides are a 400)
reasons = st.text(
    st.characters(
        exclude_categories=("Cc", "Cs", "Zl", "Zp"),
        exclude_characters="\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    max_size=30,
)
dry_bodies = st.fixed_dictionaries({"dry_run": st.just(True), "reason": reasons})


def _post(client: Client, path: str, body: Any, key: str | None = None) -> tuple[int, Any]:
    status, _, raw = client.host.dispatch(
        "POST", path, {"Idempotency-Key": key} if key else {}, json.dumps(body).encode()
    )
    return status, json.loads(raw) if raw else None


@FUZZ
@given(
    key=api_keys,
    action=st.sampled_from(["retrain", "deploy", "rollback", "promote", "pause", "resume"]),
    topic=st.sampled_from(["http", "HTTP", "reconciler", "azure-monitor", "cli", WORKSPACE]),
    event_type=st.sampled_from(FORGED_TYPES),
    shape=st.sampled_from(["manual", "reconciler", "alert"]),
    body=dry_bodies,
)
def test_no_webhook_body_lands_in_another_channel_s_key_space(
    client: Client, key: str, action: str, topic: str, event_type: str, shape: str, body: dict[str, Any]
) -> None:
    """Whatever a webhook event says (a topic of ``http``, an id shaped like a manual request's, the
    reconciler's or an alert's), it is claimed as an Event Grid event: the manual request with that key
    is answered with its own record, and the reconciler's and the alert's claims stay free."""
    from function_app.runtime import get_retrainer
    from function_app.triggers.api import request_digest
    from function_app.triggers.callers import FUNCTION_KEY
    from handlers.idempotency import bound_request
    from handlers.signals import ALERT, OPERATOR, RECONCILER_CHANNEL

    key = f"{key}-{uuid.uuid4().hex[:8]}"  # examples share the ledger: a key per example
    forged_id = {
        "manual": f"{MODEL}:{key}",
        "reconciler": f"reconciler:job-{key}:completed",
        "alert": f"{key}:fired",
    }[shape]
    forged = {
        "id": forged_id,
        "topic": topic,
        "subject": "",
        "eventType": event_type,
        "eventTime": "2026-11-25T10:00:00Z",
        "data": {"runId": f"job-{key}", "runStatus": "Completed", "experimentName": "x"},
        "dataVersion": "",
        "metadataVersion": "1",
    }
    status, _, _ = client.host.dispatch("POST", "/api/events", {"aeg-event-type": "Notification"}, json.dumps([forged]))
    assert status == 200

    ledger = get_retrainer().ledger
    for channel in (RECONCILER_CHANNEL, ALERT, OPERATOR):
        assert ledger.event_claim(Trigger(topic, forged_id, event_type, channel=channel)) is None
    status, record = _post(client, f"/api/models/{MODEL}/retrain", body, key)
    assert status == 200, record  # never 422 for a key that only a webhook event named
    assert record["trigger"]["request"] == bound_request(request_digest("retrain", MODEL, body), FUNCTION_KEY)
    if action not in ("retrain", "deploy"):  # the same key on an operator route: bound to the retrain
        status, refused = _post(client, f"/api/models/{MODEL}/{action}", {"reason": "x"}, key)
        assert status == 422 and "was first used at" in refused["error"]


@RACE
@given(
    bodies=st.lists(dry_bodies, min_size=2, max_size=3, unique_by=lambda b: b["reason"]),
    threads=st.integers(min_value=2, max_value=16),
    actions=st.lists(st.sampled_from(["retrain", "pause"]), min_size=1, max_size=2),
)
def test_concurrent_requests_sharing_a_key_never_get_another_request_s_record(
    client: Client, bodies: list[dict[str, Any]], threads: int, actions: list[str]
) -> None:
    """Requests racing with one key and different bodies (or routes): each answer is that request's
    own record, a 422 naming the first, or a 503 to retry; one decision per key, whichever won."""
    from concurrent.futures import ThreadPoolExecutor

    from function_app.runtime import get_retrainer
    from function_app.triggers.api import request_digest
    from function_app.triggers.callers import FUNCTION_KEY
    from handlers.idempotency import bound_request

    key = f"race-{uuid.uuid4().hex}"
    asks = [(actions[n % len(actions)], bodies[n % len(bodies)]) for n in range(threads)]
    asks = [(a, b if a == "retrain" else {"reason": b["reason"]}) for a, b in asks]  # an operator body: a reason

    def ask(n: int) -> tuple[int, int, Any]:
        action, body = asks[n]
        status, out = _post(client, f"/api/models/{MODEL}/{action}", body, key)
        return n, status, out

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(ask, range(threads)))

    for n, status, out in answers:
        action, body = asks[n]
        assert status in (200, 409, 422, 503), (status, out)  # 409: a pause with no rollout to pause
        if status == 200:
            assert out["trigger"]["request"] == bound_request(request_digest(action, MODEL, body), FUNCTION_KEY)
    winners = {json.dumps(asks[n], sort_keys=True) for n, status, _ in answers if status == 200}
    assert len(winners) <= 1
    assert len(get_retrainer().ledger.decisions(event_id=f"{MODEL}:{key}")) <= 1
