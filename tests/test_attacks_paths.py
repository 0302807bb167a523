"""Path and name tricks, tried as a workspace account (who shapes a run's or a monitor's event), an events key
(who posts any event body) or an operator key (who sends a manual request's inputs) would: a value that reads
as inside what the policy allows to one reader and outside it to another is refused, never used."""

from __future__ import annotations

import json

import pytest

from handlers.decisions import decide
from handlers.envelopes import parse_body, to_signal
from handlers.errors import InvalidInput
from handlers.inputs import check_manual
from handlers.plans import Decision, Retrain
from handlers.signals import ManualRequest, Trigger
from tests.builders import MODEL, SCOPE, drift_event, with_retrain

ALLOWED = "https://ours.blob.core.windows.net/in/"
TAKEN_FROM_EVENT = with_retrain(
    {
        "inputs": {
            "training_data": {"type": "uri_file", "from_event": "TargetDatasetId", "allowed_prefixes": [ALLOWED]},
        },
        "overridable": ["training_data"],
    }
)
# Each is under the allowed prefix as a string, and elsewhere once a reader resolves it (a '..' or '.' segment,
# percent-encoded or not; a backslash, a separator to some tools), or carries what a data path has no use for
# (a query, where a SAS token travels, or a fragment).
OUTSIDE = [
    ALLOWED + "../private/x.csv",
    ALLOWED + "./../private/x.csv",
    ALLOWED + "%2e%2e/private/x.csv",
    ALLOWED + "%2E%2E%2Fprivate/x.csv",
    ALLOWED + "..%2fprivate/x.csv",
    ALLOWED + "..\\private\\x.csv",
    ALLOWED + "x.csv?sv=2024-01-01&sig=theirs",
    ALLOWED + "x.csv#../../private",
]


def decided(value: str) -> list[Decision]:
    raw = drift_event(event_id="traversal")
    raw["data"]["TargetDatasetId"] = value
    return decide(to_signal(parse_body(json.dumps([raw]))[0], SCOPE), TAKEN_FROM_EVENT, SCOPE)


@pytest.mark.parametrize("value", OUTSIDE)
def test_an_event_path_that_leaves_an_allowed_prefix_once_resolved_is_a_recorded_skip(value: str) -> None:
    [d] = decided(value)
    assert not isinstance(d, Retrain)
    assert getattr(d, "details", None) == {"input": "training_data"}
    reason = str(getattr(d, "reason", ""))
    assert "resolves outside" in reason and f"models.{MODEL}.retrain.inputs.training_data" in reason
    assert "sig=theirs" not in reason  # a query (a SAS token) is never repeated into the record


@pytest.mark.parametrize("value", OUTSIDE)
def test_a_manual_input_that_leaves_an_allowed_prefix_once_resolved_is_a_400(value: str) -> None:
    trigger = Trigger("http", "req-1", "ManualRequest.retrain")
    request = ManualRequest(trigger, MODEL, "retrain", "why", inputs={"training_data": value})
    with pytest.raises(InvalidInput, match="resolves outside") as refused:
        check_manual(request, TAKEN_FROM_EVENT)
    assert "sig=theirs" not in str(refused.value)


@pytest.mark.parametrize("value", [ALLOWED + "2026/12/x.csv", ALLOWED + "day%2001.csv", ALLOWED + "v1.2..3.csv"])
def test_a_path_under_an_allowed_prefix_is_still_used_as_it_is(value: str) -> None:
    [d] = decided(value)
    assert isinstance(d, Retrain) and d.job.inputs["training_data"]["value"] == value
