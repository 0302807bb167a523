"""What the Table ledger costs in round trips, on Azurite: a decision's record and its trail rows are
one entity group transaction, so the first write of a decision is one request, whatever trails it is in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from azure.core.pipeline import PipelineRequest
from azure.data.tables import TableServiceClient

from function_app.adapters.table_ledger import CLIENT_OPTIONS, TableLedger
from handlers.records import DecisionRecord, iso
from tests.azurite import Azurite

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def counted_ledger(azurite: Azurite) -> tuple[TableLedger, list[str]]:
    """A Table ledger whose every HTTP request is noted as 'METHOD path'."""
    seen: list[str] = []

    def note(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        http = request.http_request
        seen.append(f"{http.method} {http.url.split('?')[0].rsplit('/', 1)[-1]}")

    service = TableServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=note, **CLIENT_OPTIONS
    )
    return TableLedger(service, "t" + uuid.uuid4().hex[:12]), seen


def skip(decision_id: str, at: datetime = NOW, outcome: str = "skipped") -> DecisionRecord:
    return DecisionRecord(
        id=decision_id,
        model="m1",
        action="retrain",
        outcome=outcome,
        reason="within the cooldown",
        trigger={"source": "/subscriptions/s", "event_id": "e1", "event_type": "x"},
        at=iso(at),
    )


def test_the_first_write_of_a_decision_is_one_transaction(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    seen.clear()  # the tables' creation
    ledger.put_decision(skip("d1"))
    assert seen == ["POST $batch"]
    # ... and it is in every trail it belongs to: all, its model's and its event's
    assert [d.id for d in ledger.decisions()] == ["d1"]
    assert [d.id for d in ledger.decisions("m1")] == ["d1"]
    assert [d.id for d in ledger.decisions(event_id="e1")] == ["d1"]


def test_a_rewrite_reads_the_creation_time_and_writes_again_in_one_transaction(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.put_decision(skip("d1", outcome="reserved"))
    seen.clear()
    ledger.put_decision(skip("d1", outcome="submitted"))
    # the outbox row of the submitted decision, the insert that finds the record, its read, the rewrite
    decisions, outbox = ledger.names["decisions"], ledger.names["outbox"]
    assert seen == [
        f"POST {outbox}",
        "POST $batch",
        f"GET {decisions}(PartitionKey='d',RowKey='r%3Ad1')",
        "POST $batch",
    ]
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "submitted")]
