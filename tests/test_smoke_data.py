"""The smoke test's sample requests kept in a data asset (``deploy.rollout.smoke.requests: {data:
azureml:name:version}``), end to end: the real azure-ai-ml reads the asset and its datastore from the fake
ARM, and the file's bytes come from the datastore's storage account (tests/fake_datastores.py) read with
the service's identity and the roles infra/ gives it. A file that cannot be read fails the smoke test:
a rollback before any traffic, saying why and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.policy import Policy
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.conftest import REPO
from tests.fake_datastores import BLOB_READ, blob_body
from tests.ledgers import LedgerSpec
from tests.rollouts import Reads

SAMPLES = [{"data": [[1, 2, 3]]}, {"data": [[4, 5, 6], [7, 8, 9]]}, {"data": [[0, 0, 1]]}]
ASSET = "azureml:smoke-requests:2"


def policy(**requests: Any) -> Policy:
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    raw["models"][MODEL]["deploy"]["rollout"]["smoke"] = {"requests": {"data": ASSET, **requests}}
    return Policy.model_validate(raw)


class DataSmoke(Reads):
    """A world whose policy smoke-tests the candidate with the requests of data asset smoke-requests:2,
    whose file holds ``content``."""

    def __init__(self, tmp_path: Path, spec: LedgerSpec, content: bytes, kind: str = "uri_file", **rule: Any) -> None:
        self.azure = AzureWorld(tmp_path, spec, policy=policy(**rule))
        arm = self.azure.arm
        arm.scoring.aad(ENDPOINT)
        arm.add_data("smoke-requests", "2", kind=kind, uri=arm.datastores.put("smoke/requests.jsonl", content))
        [deploy] = self.azure.deliver(self.azure.finished_run(r2="0.61")).decisions
        self.name = str(deploy.details["rendered"]["deployment"])
        self.azure.provisioned()

    def state(self) -> str:
        [entry] = self.azure.new_worker().reconcile().rollouts
        return str(entry["state"])


@pytest.fixture
def world(tmp_path: Path, ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    made: list[DataSmoke] = []

    def make(content: bytes = blob_body(SAMPLES), **kw: Any) -> DataSmoke:
        made.append(DataSmoke(tmp_path, ledger_spec, content, **kw))
        return made[-1]

    yield make
    for smoke in made:
        smoke.azure.close()
        assert smoke.azure.arm.unexpected == []


def test_the_smoke_requests_are_read_from_the_data_asset_s_file_with_the_service_s_identity(world: Any) -> None:
    smoke = world(count=2)
    azure = smoke.azure

    assert smoke.state() == "smoke_passed"

    assert azure.arm.scoring.to(smoke.name) == SAMPLES[:2]  # the first `count` lines, in order
    assert azure.arm.datastores.reads == [("azureml-blobstore-5b1f3b5e", "smoke/requests.jsonl")]
    assert azure.arm.requests_to("GET", "^data/smoke-requests/versions/2$")
    assert azure.arm.requests_to("GET", "^datastores/workspaceblobstore$")
    assert azure.arm.requests_to("POST", "listSecrets") == []  # never the datastore's key
    [passed] = smoke.records("rollout")
    assert passed.details["smoke"]["requests"] == 2
    assert azure.arm.traffic_puts == []  # the smoke test changed no traffic


def test_without_blob_data_reader_on_the_storage_account_the_candidate_gets_no_traffic(world: Any) -> None:
    smoke = world()
    azure = smoke.azure
    azure.arm.principal = azure.arm.principal.dropping("Storage Blob Data Reader")

    assert smoke.state() == "smoke_failed"

    assert azure.arm.traffic_puts == [] and azure.arm.scoring.to(smoke.name) == []
    assert [a for a, _ in azure.arm.refused] == [BLOB_READ]
    [rollback] = smoke.records("rollback")
    assert "smoke test failed: no sample requests: storage account stretraindev refused" in rollback.reason
    assert "grant it Storage Blob Data Reader on that account: set workspaceStorageAccountName" in rollback.reason
    assert rollback.details["smoke"]["requests_from"] == ASSET


@pytest.mark.parametrize(
    ("content", "kind", "said"),
    [
        (b'{"data": [[1]]}\nnot json\n', "uri_file", "data asset smoke-requests:2: line 2 is not JSON; write one JSON"),
        (b"\n\n", "uri_file", "data asset smoke-requests:2 holds no request"),
        (blob_body(SAMPLES), "uri_folder", "is a uri_folder; the smoke requests are read from a uri_file asset"),
    ],
)
def test_a_data_asset_that_holds_no_json_lines_fails_the_smoke_test_saying_what_to_fix(
    world: Any, content: bytes, kind: str, said: str
) -> None:
    smoke = world(content=content, kind=kind)

    assert smoke.state() == "smoke_failed"

    assert smoke.azure.arm.traffic_puts == []
    [rollback] = smoke.records("rollback")
    assert said in rollback.reason
    assert "not json" not in str(rollback.details)  # the file's contents are not recorded


def test_a_data_asset_that_is_not_registered_fails_the_smoke_test(world: Any) -> None:
    smoke = world()
    del smoke.azure.arm.data[("smoke-requests", "2")]

    assert smoke.state() == "smoke_failed"

    [rollback] = smoke.records("rollback")
    assert "data asset smoke-requests:2" in rollback.reason
    assert "register it (az ml data create --type uri_file)" in rollback.reason


def test_a_data_asset_s_file_that_stays_unreadable_defers_the_smoke_test_until_max_wait(world: Any) -> None:
    smoke = world()  # smoke.max_wait: the default 1h
    azure = smoke.azure
    azure.arm.fail(503, times=1000, method="GET", path="smoke/requests.jsonl")  # its storage account is down
    first = azure.now.now
    for minutes in (0, 30):
        azure.now.now = first + timedelta(minutes=minutes)
        report = azure.new_worker().reconcile()
        assert report.rollouts == [] and "smoke-requests:2" in report.deferred[0]["error"]
    azure.now.now = first + timedelta(minutes=60)

    assert smoke.state() == "smoke_failed"

    assert azure.arm.traffic_puts == [] and azure.arm.scoring.to(smoke.name) == []
    [rollback] = smoke.records("rollback")
    assert "smoke test never judged: deferred since" in rollback.reason and "(1h, 3 tries)" in rollback.reason
    assert "reading the file of data asset smoke-requests:2" in rollback.reason
