"""The pure rules of pinning a retrain's data (handlers/pins.py): which inputs read a data asset's latest version,
what a plan becomes pinned or not, what a resumed retrain keeps, and what four eyes compare."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import pins
from handlers.creators import DATA, sources
from handlers.freshness import ASSET_EVENT, NEW_ASSET_VERSION
from handlers.plans import JobPlan, Retrain
from handlers.records import DecisionRecord
from handlers.signals import Trigger


def spec(value: Any, kind: str = "uri_folder") -> dict[str, Any]:
    return {"type": kind, "value": value, "from": "policy"}


def plan(**inputs: dict[str, Any]) -> JobPlan:
    return JobPlan("job-1", "m", "train:1", "e", None, dict(inputs), {}, "x")


class Latest:
    """The workspace's answer to ``data.get(name, label="latest")``: each asset's latest version."""

    def __init__(self, **versions: str) -> None:
        self.versions, self.asked = versions, []  # type: ignore[var-annotated]

    def latest_data(self, name: str) -> str:
        self.asked.append(name)
        return self.versions[name]


@pytest.mark.parametrize(
    ("given", "asset"),
    [
        (spec("azureml:train@latest"), "train"),
        (spec("azureml:train"), "train"),  # a name alone (an event's dataset id): read as its latest version
        (spec("azureml:train@latest", "mltable"), "train"),
        (spec("azureml:train:3"), None),
        (spec("azureml:train@champion"), None),  # no other label resolves; the policy refuses one
        (spec("azureml://datastores/blobs/paths/train/"), None),
        (spec("train@latest"), None),  # not a data asset reference (the backend refuses it as a local path)
        (spec("azureml:model@latest", "custom_model"), None),  # a model is not data
        (spec("azureml:train@latest", "literal"), None),
        (spec(3), None),
        ({**spec("azureml:train:2"), "pinned_from": "azureml:train@latest"}, None),
    ],
)
def test_an_input_reads_a_data_assets_latest_version_only_by_latest_or_its_name_alone(
    given: dict[str, Any], asset: str | None
) -> None:
    assert pins.reads_latest(given) == asset


def test_pinning_names_the_version_the_workspace_calls_latest_and_what_was_asked() -> None:
    latest = Latest(train="7")
    pinned = pins.pin(plan(data=spec("azureml:train@latest"), lr=spec(0.1, "literal"), v=spec("azureml:x:2")), latest)
    assert pinned.inputs["data"] == {**spec("azureml:train:7"), "pinned_from": "azureml:train@latest"}
    assert pinned.inputs["lr"] == spec(0.1, "literal") and pinned.inputs["v"] == spec("azureml:x:2")
    assert latest.asked == ["train"] and pins.pinned_any(pinned)
    assert pins.pin(pinned, Latest()) is pinned  # pinned once: nothing is read again


def test_without_a_workspace_to_read_an_input_says_it_was_not_pinned() -> None:
    unread = pins.pin(plan(data=spec("azureml:train@latest")), None)
    assert unread.inputs["data"]["value"] == "azureml:train@latest" and not pins.pinned_any(unread)
    assert "reads no workspace" in unread.inputs["data"]["not_pinned"]


def _reserved(inputs: dict[str, Any], outcome: str = "reserved") -> DecisionRecord:
    rendered = {"type": "pipeline", "inputs": inputs}
    return DecisionRecord(
        "re-1", "m", "retrain", outcome, "r", {}, "2026-12-07T00:00:00Z", details={"rendered": rendered}
    )


def test_a_resumed_retrain_keeps_what_its_reservation_pinned_for_the_same_input() -> None:
    decision = Retrain("re-1", "m", "r", Trigger("t", "e", "x"), plan(data=spec("azureml:train@latest")))
    kept = {**spec("azureml:train:2"), "pinned_from": "azureml:train@latest"}
    assert pins.as_reserved(decision, _reserved({"data": kept})).job.inputs["data"] == kept
    other = {**spec("azureml:other:5"), "pinned_from": "azureml:other@latest"}  # not what this input asks
    assert pins.as_reserved(decision, _reserved({"data": other})) is decision
    assert pins.as_reserved(decision, _reserved({"data": kept}, outcome="failed")) is decision


def test_four_eyes_compare_each_pinned_version_once_beside_the_version_that_started_the_retrain() -> None:
    pinned = {**spec("azureml:train:3"), "pinned_from": "azureml:train@latest"}
    record = DecisionRecord(
        "re-1",
        "m",
        "retrain",
        "pending",
        "r",
        {"event_id": f"{ASSET_EVENT}train:3", "event_type": NEW_ASSET_VERSION},
        "2026-12-07T00:00:00Z",
        details={"rendered": {"type": "pipeline", "inputs": {"data": pinned, "extra": {**pinned}}}},
    )
    found = sources(record, lambda _: None)
    assert [(s.kind, s.name) for s in found] == [(DATA, "train:3")]
    assert found[0].what.startswith("the new data asset version that started")  # the first way it led here
