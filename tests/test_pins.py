"""The pure rules of pinning a retrain's data and models (handlers/pins.py): which inputs read an asset's latest version,
what a plan becomes pinned or not, what a resumed retrain keeps, what the job it adopted holds, and what four eyes
compare."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import pins
from handlers.creators import sources
from handlers.errors import PermanentError
from handlers.freshness import ASSET_EVENT, NEW_ASSET_VERSION
from handlers.pins import DATA, MODEL
from handlers.plans import JobPlan, Retrain
from handlers.records import DecisionRecord
from handlers.signals import Trigger


def spec(value: Any, kind: str = "uri_folder") -> dict[str, Any]:
    return {"type": kind, "value": value, "from": "policy"}


def plan(**inputs: dict[str, Any]) -> JobPlan:
    return JobPlan("job-1", "m", "train:1", "e", None, dict(inputs), {}, "x")


class Latest:
    """The workspace's answer to ``data.get(name, label="latest")`` and ``models.get(name, label="latest")``: each
    asset's latest version; a name it was not told of is no asset (PermanentError, as the backend's)."""

    def __init__(self, **versions: str) -> None:
        self.versions, self.asked = versions, []  # type: ignore[var-annotated]

    def latest_data(self, name: str) -> str:
        self.asked.append(f"data {name}")
        if name not in self.versions:
            raise PermanentError(f"the workspace has no data asset {name!r}")
        return self.versions[name]

    def latest_model(self, name: str) -> str:
        self.asked.append(f"model {name}")
        if name not in self.versions:
            raise PermanentError(f"the workspace has no model {name!r}")
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
        (spec("azureml:base@latest", "custom_model"), "base"),  # a model's latest version too
        (spec("azureml:base", "mlflow_model"), "base"),
        (spec("azureml:base:4", "mlflow_model"), None),
        (spec("azureml:base@latest", "triton_model"), None),  # no type the policy accepts
        (spec("azureml:train@latest", "literal"), None),
        (spec(3), None),
        ({**spec("azureml:train:2"), "pinned_from": "azureml:train@latest"}, None),
    ],
)
def test_an_input_reads_an_assets_latest_version_only_by_latest_or_its_name_alone(
    given: dict[str, Any], asset: str | None
) -> None:
    assert pins.reads_latest(given) == asset


def test_pinning_names_the_version_the_workspace_calls_latest_and_what_was_asked() -> None:
    latest = Latest(train="7")
    pinned = pins.pin(plan(data=spec("azureml:train@latest"), lr=spec(0.1, "literal"), v=spec("azureml:x:2")), latest)
    assert pinned.inputs["data"] == {**spec("azureml:train:7"), "pinned_from": "azureml:train@latest"}
    assert pinned.inputs["lr"] == spec(0.1, "literal") and pinned.inputs["v"] == spec("azureml:x:2")
    assert latest.asked == ["data train"]
    assert pins.pin(pinned, Latest()) is pinned  # pinned once: nothing is read again


def test_a_model_input_is_pinned_to_the_version_the_workspace_calls_the_models_latest() -> None:
    latest = Latest(base="4", train="7")
    given = plan(base=spec("azureml:base@latest", "custom_model"), data=spec("azureml:train"))
    pinned = pins.pin(given, latest)
    assert pinned.inputs["base"] == {**spec("azureml:base:4", "custom_model"), "pinned_from": "azureml:base@latest"}
    assert latest.asked == ["model base", "data train"]
    assert pins.pinned_versions(pinned.as_dict()) == [("base", MODEL, "base:4"), ("data", DATA, "train:7")]


def test_pinning_an_input_whose_asset_does_not_exist_names_the_input() -> None:
    with pytest.raises(PermanentError, match=r"input 'base' of model 'm' reads 'azureml:gone@latest': .*no model"):
        pins.pin(plan(base=spec("azureml:gone@latest", "mlflow_model")), Latest())


def test_without_a_workspace_to_read_an_input_says_it_was_not_pinned() -> None:
    unread = pins.pin(plan(data=spec("azureml:train@latest")), None)
    assert unread.inputs["data"]["value"] == "azureml:train@latest" and "pinned_from" not in unread.inputs["data"]
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


PINNED = {**spec("azureml:train:3"), "pinned_from": "azureml:train@latest"}  # pinned again as a retrain resumed
OTHER_WORKSPACE = (
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w/data/train/versions/2"
)


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("azureml:train:2", ("train", "2")),
        ("azureml:train@latest", None),  # a label: no version
        ("azureml:train", None),  # a name alone
        ("azureml:train:2:3", None),
        ("azureml://datastores/blobs/paths/train/", None),
        (OTHER_WORKSPACE, None),
        ("train:2", None),  # not in the policy's form (the adapter gives azureml:<asset>:<version>)
        (None, None),
    ],
)
def test_a_data_version_is_read_from_a_job_input_only_in_the_policys_form(
    ref: str | None, version: tuple[str, str] | None
) -> None:
    assert pins.data_version(ref) == version


def test_an_adopted_job_reading_an_older_version_of_the_pinned_asset_is_recorded_with_that_version() -> None:
    adopted = pins.as_adopted(plan(data=PINNED), {"data": "azureml:train:2"})
    assert adopted.inputs["data"] == {**PINNED, "value": "azureml:train:2"}
    assert pins.pinned_versions(adopted.as_dict()) == [("data", DATA, "train:2")]  # what four eyes compare


def test_an_adopted_job_reading_the_version_pinned_again_leaves_the_plan_as_it_is() -> None:
    given = plan(data=PINNED)
    assert pins.as_adopted(given, {"data": "azureml:train:3"}) is given
    assert pins.as_adopted(given, {"data": "azureml:TRAIN:3"}).inputs["data"]["value"] == "azureml:TRAIN:3"


def test_an_adopted_job_reading_a_version_of_another_asset_is_recorded_so_and_its_creator_compared() -> None:
    adopted = pins.as_adopted(plan(data=PINNED), {"data": "azureml:holdout:9"})
    data = adopted.inputs["data"]
    assert (data["value"], data["pinned_from"]) == ("azureml:holdout:9", "azureml:train@latest")
    assert "not a version of data asset 'train'" in data["adopted_differs"], data
    assert pins.pinned_versions(adopted.as_dict()) == [("data", DATA, "holdout:9")]


@pytest.mark.parametrize(
    ("held", "value"),
    [
        ({"data": "azureml://datastores/blobs/paths/train/"}, "azureml://datastores/blobs/paths/train/"),
        ({"data": OTHER_WORKSPACE}, OTHER_WORKSPACE),  # the SDK shortens its own workspace's ids only
        ({}, None),  # the job has no such input
    ],
)
def test_an_adopted_job_reading_no_version_is_recorded_as_it_holds_it_and_not_as_pinned(
    held: dict[str, str], value: str | None
) -> None:
    data = pins.as_adopted(plan(data=PINNED), held).inputs["data"]
    assert data["value"] == value and "pinned_from" not in data
    assert "adopted job holds" in data["adopted_differs"], data
    assert pins.pinned_versions({"inputs": {"data": data}}) == []


@pytest.mark.parametrize("reads", ["azureml:train@latest", "azureml:train"])
def test_a_job_adopted_before_its_plan_was_pinned_is_recorded_as_pinned_to_the_version_it_holds(reads: str) -> None:
    """A resumed retrain adopts its job before it pins anything: an input that reads the latest version names the
    version the job holds, pinned from what the plan reads, so four eyes compare its creator."""
    adopted = pins.as_adopted(plan(data=spec(reads), lr=spec(0.1, "literal")), {"data": "azureml:train:2"})
    assert adopted.inputs == {"data": {**spec("azureml:train:2"), "pinned_from": reads}, "lr": spec(0.1, "literal")}
    assert pins.pinned_versions(adopted.as_dict()) == [("data", DATA, "train:2")]


def test_only_pinned_inputs_are_read_from_an_adopted_job() -> None:
    fixed, unread = spec("azureml:x:2"), {**spec("azureml:train@latest"), "not_pinned": "dry run"}
    given = plan(v=fixed, u=unread, lr=spec(0.1, "literal"))
    assert pins.as_adopted(given, {"v": "azureml:x:1", "u": "azureml:train:4", "lr": "0.2"}) is given


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


def test_four_eyes_compare_a_pinned_model_version_as_a_model() -> None:
    base = {**spec("azureml:base:4", "custom_model"), "pinned_from": "azureml:base@latest"}
    rendered = {"type": "pipeline", "inputs": {"base": base}}
    record = DecisionRecord(
        "re-1", "m", "retrain", "pending", "r", {}, "2026-12-07T00:00:00Z", details={"rendered": rendered}
    )
    [found] = sources(record, lambda _: None)
    assert (found.kind, found.name) == (MODEL, "base:4") and "model input 'base'" in found.what
