"""Infra and code agree on new data (retrain.on.data): the data account's system topic and its
BlobCreated subscriptions (infra/modules/data-events.bicep), created only when the deployment names an
account, deliver what the code reads, to the function the app registers, and give the app nothing.
Read with pycep, as tests/test_infra_settings.py and test_infra_events.py read the rest."""

from __future__ import annotations

import json
import re
from typing import Any

from handlers import envelopes, signals
from tests.bicep import INFRA, bicep
from tests.conftest import REPO, load_module

DATA = "modules/data-events.bicep"
hooklib = load_module("hooklib", REPO / "infra" / "hooks" / "hooklib.py")
ACCOUNT = "/subscriptions/s/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/mydata"


def data_subscription() -> dict[str, Any]:
    resource: dict[str, Any] = bicep(DATA)["resources"]["blobCreated"]["config"]
    return resource


def main_module(name: str) -> dict[str, Any]:
    module: dict[str, Any] = bicep("main.bicep")["modules"][name]["config"]
    return module


def test_the_data_topic_and_its_dead_letter_role_exist_only_when_the_deployment_names_an_account() -> None:
    assert main_module("dataEvents")["condition"] == "newData"
    assert main_module("dataDeadLetterAccess")["condition"] == "newData"
    new_data = bicep("main.bicep")["variables"]["newData"]["value"]
    assert "newDataStorageAccountId" in json.dumps(new_data) and "not" in json.dumps(new_data)
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["newDataStorageAccountId"]["value"] == "${RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID=}"
    assert parameters["newDataPrefixes"]["value"] == "${RETRAIN_NEW_DATA_PREFIXES=}"


def test_the_data_topic_is_the_accounts_and_each_subscription_takes_only_finished_blobs_of_one_prefix() -> None:
    topic = bicep(DATA)["resources"]["systemTopic"]["config"]
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    assert "account" in json.dumps(topic["properties"]["source"])
    assert topic["identity"] == {"type": "SystemAssigned"}
    sub = data_subscription()
    assert sub["condition"] == "deployEventSubscriptions"
    assert sub["loop_type"]["detail"]["array_name"] == "subscriptions"
    flt = sub["config"]["properties"]["filter"]
    assert flt["includedEventTypes"] == [signals.BLOB_CREATED]
    assert flt["isSubjectCaseSensitive"] is True  # blob names are; the code's prefix match is too
    [api] = flt["advancedFilters"]
    assert (api["operatorType"], api["key"]) == ("StringIn", "data.api")
    assert set(api["values"]) == {"PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"}
    per_source = bicep(DATA)["variables"]["subscriptions"]["value"]
    assert per_source["loop_type"]["detail"]["array_name"] == "sources"
    subject = per_source["config"]["subjectBeginsWith"]
    # container/prefix as the template lays it out is the subject the code reads the container and blob from
    example = re.sub(r"\$\{split\(source, '/'\)\[0\]\}", "training", subject)
    example = re.sub(r"\$\{contains\(source.*\}$", "diabetes/", example)
    assert example == "/blobServices/default/containers/training/blobs/diabetes/"
    match = envelopes._BLOB_SUBJECT.match(example + "2026-12-06/part-0001.csv")
    assert match is not None and match.groups() == ("training", "diabetes/2026-12-06/part-0001.csv")


def test_blob_events_go_to_the_event_grid_function_the_app_registers_and_dead_letter_like_the_workspaces() -> None:
    params = main_module("dataEvents")["config"]["params"]
    assert params["functionName"] == "eventGridFunctionName"
    assert params["sources"] == "newDataSources" and params["nameToken"] == "resourceToken"
    properties = data_subscription()["config"]["properties"]
    workspace = bicep("modules/events.bicep")["resources"]["subscriptions"]["config"]["config"]["properties"]
    for key in ("destination", "eventDeliverySchema", "retryPolicy", "deadLetterWithResourceIdentity"):
        assert properties[key] == workspace[key], key
    assert bicep(DATA)["variables"]["prefix"]["value"] == "retrain-${nameToken}-data"


def test_the_app_gets_no_role_on_the_data_account_and_the_data_topic_only_its_dead_letter_container() -> None:
    resources = bicep(DATA)["resources"].values()
    assert [r for r in resources if r["type"] == "Microsoft.Authorization/roleAssignments"] == []
    params = main_module("dataEvents")["config"]["params"]
    assert not any("identity" in json.dumps(v) or "PrincipalId" in k for k, v in params.items())
    access = main_module("dataDeadLetterAccess")["config"]
    assert access["scope"] == "rg"
    assert set(access["params"]) == {"storageAccountName", "deadLetterContainerName", "topicPrincipalId"}
    assert "dataEvents" in json.dumps(access["params"]["topicPrincipalId"])
    assert "systemTopicPrincipalId" in json.dumps(access["params"]["topicPrincipalId"])


def test_the_hook_passes_the_one_account_the_policy_retrains_on_and_each_container_prefix_once() -> None:
    blobs = [
        {"account": ACCOUNT, "container": "training", "prefix": "diabetes/"},
        {"account": ACCOUNT.upper(), "container": "labels"},  # resource ids compare case-insensitively
    ]
    policy = {
        "models": {
            "a": {"retrain": {"on": {"data": {"blobs": blobs}}}},
            "b": {"retrain": {True: {"data": {"blobs": blobs[:1]}}}},  # a bare `on:` as PyYAML reads it
            "c": {"retrain": {}},
        }
    }
    assert hooklib.new_data(policy) == (ACCOUNT, ["training/diabetes/", "labels"], [])
    other = ACCOUNT.replace("mydata", "otherdata")
    policy["models"]["c"] = {"retrain": {"on": {"data": {"blobs": [{"account": other, "container": "x"}]}}}}
    assert hooklib.new_data(policy) == ("", [], sorted([ACCOUNT, other]))  # several: none, and said
    assert hooklib.new_data({"models": {"c": {"retrain": {}}}}) == ("", [], [])
