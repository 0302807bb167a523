"""New data (retrain.on.data) end to end with the real SDK world: BlobCreated events through the service,
the reconciler's settle window, and the one retrain's pipeline job submitted through azure-ai-ml to the
fake workspace; a trickle of blobs that never settles still retrains after the policy's max_wait."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from handlers.records import iso
from tests.azure_world import DATASET, AzureWorld
from tests.builders import MODEL, blob_event, with_retrain_on

SOURCES = [{"account": blob_event("x")["topic"], "container": "training", "prefix": "diabetes/"}]


def use(azure: AzureWorld, on: dict[str, Any]) -> None:
    azure.policy = with_retrain_on(on)
    azure.worker = azure.new_worker()


@pytest.mark.both_ledgers  # the burst is kept in the model's state: each ledger's conditional writes
def test_a_burst_of_blob_events_submits_one_pipeline_job_through_the_sdk_after_the_settle_window(
    azure: AzureWorld,
) -> None:
    use(azure, {"data": {"blobs": SOURCES, "settle": "5m"}})
    start = azure.now.now
    for i in range(60):  # one file a second for a minute, each delivered twice (at least once)
        azure.now.now = start + timedelta(seconds=i)
        raw = blob_event(f"diabetes/2026-12-06/part-{i:04}.csv", event_id=f"blob-{i}")
        assert azure.deliver(raw).status == "processed" and azure.deliver(raw).status == "duplicate"
    outside = azure.deliver(blob_event("churn/part-0001.csv")).decisions
    assert [d.outcome for d in outside] == ["skipped"] and "outside what" in outside[0].reason
    last = azure.now.now

    azure.now.now = last + timedelta(minutes=4)
    assert azure.reconcile().started == [] and azure.arm.job_puts == []

    azure.now.now = last + timedelta(minutes=5)
    [started] = azure.reconcile().started
    assert (started.action, started.outcome) == ("retrain", "submitted")
    assert "60 blob(s)" in started.reason and "none since for 5m" in started.reason
    [put] = azure.arm.job_puts
    assert put.path == f"jobs/{started.job['name']}"  # type: ignore[index]
    props = put.body["properties"]
    assert props["tags"]["retrain_trigger"].startswith("BlobCreated:burst:bu-")
    assert props["inputs"]["training_data"]["uri"] == azure.arm.arm_id("data", DATASET, "versions", "2")
    assert "worthiness" not in started.details  # new data is new by itself: not second-guessed

    azure.now.now += timedelta(minutes=30)
    assert azure.reconcile().started == [] and len(azure.arm.job_puts) == 1


def test_a_trickle_that_never_settles_retrains_once_the_max_wait_has_passed(azure: AzureWorld) -> None:
    use(azure, {"data": {"blobs": SOURCES, "settle": "2m", "max_wait": "30m"}})
    start = azure.now.now
    started = []
    for i in range(0, 45 * 60, 20):  # a file every 20 seconds for 45 minutes: never 2 quiet minutes
        azure.now.now = start + timedelta(seconds=i)
        azure.deliver(blob_event(f"diabetes/stream/{i:06}.json", event_id=f"trickle-{i}"))
        if i % 300 == 0:  # the reconciler's pass every 5 minutes
            started += azure.reconcile().started
    [retrain] = [d for d in started if d.outcome == "submitted"]
    assert retrain.at == iso(start + timedelta(minutes=30))  # the first pass at or after first blob + max_wait
    assert "still coming, but the first came 30m ago or more (on.data.max_wait)" in retrain.reason
    assert len(azure.arm.job_puts) == 1
    # what kept coming is a burst of its own, which waits for the guards (the retrain is in flight)
    assert azure.ledger.get_model(MODEL).burst is not None


def test_without_a_max_wait_a_trickle_keeps_waiting_for_its_settle_window(azure: AzureWorld) -> None:
    use(azure, {"data": {"blobs": SOURCES, "settle": "2m"}})
    start = azure.now.now
    for i in range(0, 45 * 60, 20):
        azure.now.now = start + timedelta(seconds=i)
        azure.deliver(blob_event(f"diabetes/stream/{i:06}.json", event_id=f"trickle-{i}"))
        if i % 300 == 0:
            assert azure.reconcile().started == []
    assert azure.arm.job_puts == []
