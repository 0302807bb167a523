"""Azure Monitor alerts in the common alert schema: parsed, routed by rule name, recorded."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from handlers.decisions import decide
from handlers.envelopes import parse_alert
from handlers.errors import InvalidInput
from handlers.plans import Retrain, Skip
from tests.builders import EXAMPLE_POLICY, SCOPE
from tests.conftest import REPO, Client

ALERT: dict[str, Any] = json.loads((REPO / "examples" / "events" / "alert.common-schema.json").read_text())


def alert(**essentials: Any) -> bytes:
    body = copy.deepcopy(ALERT)
    body["data"]["essentials"].update(essentials)
    return json.dumps(body).encode()


def test_fired_and_resolved_notifications_are_distinct_events() -> None:
    fired, resolved = parse_alert(alert()), parse_alert(alert(monitorCondition="Resolved"))
    assert fired.fired and not resolved.fired
    assert fired.trigger.event_id != resolved.trigger.event_id
    assert fired.trigger.event_id == "0f0e0d0c-0000-4000-8000-00000000a1e7:fired"


def test_resolved_alert_is_recorded_not_acted_on() -> None:
    [d] = decide(parse_alert(alert(monitorCondition="Resolved")), EXAMPLE_POLICY, SCOPE)
    assert isinstance(d, Skip) and "resolved" in d.reason and d.model == "sklearn_regression_model"


def test_alert_rule_names_match_case_insensitively() -> None:
    [d] = decide(parse_alert(alert(alertRule="Diabetes-Feature-Drift")), EXAMPLE_POLICY, SCOPE)
    assert isinstance(d, Retrain) and "fired (Sev2, Log)" in d.reason


def test_alert_for_a_rule_no_model_listens_to_is_skipped_with_its_name() -> None:
    [d] = decide(parse_alert(alert(alertRule="cpu-high")), EXAMPLE_POLICY, SCOPE)
    assert isinstance(d, Skip) and "'cpu-high'" in d.reason


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "not valid JSON"),
        (json.dumps({"schemaId": "Microsoft.Insights/activityLogs"}).encode(), "enable the common alert schema"),
        (json.dumps({"schemaId": "azureMonitorCommonAlertSchema", "data": {}}).encode(), "data.essentials"),
        (alert(alertRule=""), "missing alertRule"),
    ],
)
def test_malformed_alerts_say_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_alert(body)


def test_alert_route_plans_a_retrain_and_dedups_repeats(client: Client) -> None:
    status, _, body = client.call("POST", "/api/alerts", json.loads(alert()))
    assert status == 200 and body["decisions"][0]["outcome"] == "planned"
    status, _, again = client.call("POST", "/api/alerts", json.loads(alert()))
    assert status == 200 and again["status"] == "duplicate"
    assert client.call("POST", "/api/alerts", b"[]")[0] == 400
