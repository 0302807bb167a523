"""What the Table ledger costs in round trips, on Azurite: a decision's record and its trail rows are
one entity group transaction in the shard of its id, so the first write of a decision is one request,
whatever trails it is in; a trail is read from every shard and merged, newest first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.pipeline import PipelineRequest
from azure.data.tables import TableServiceClient

from function_app.adapters.table_entities import DECISION_PARTITIONS, client_options, decision_partition
from function_app.adapters.table_ledger import TableLedger
from handlers.notify import notification_id
from handlers.records import DecisionRecord, iso
from tests.azurite import Azurite

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def counted_ledger(azurite: Azurite, prefix: str | None = None) -> tuple[TableLedger, list[str]]:
    """A Table ledger whose every HTTP request is noted as 'METHOD path' (``prefix``: another
    worker's ledger, the same tables)."""
    seen: list[str] = []

    def note(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        http = request.http_request
        seen.append(f"{http.method} {http.url.split('?')[0].rsplit('/', 1)[-1]}")

    service = TableServiceClient.from_connection_string(
        azurite.connection_string, **client_options(raw_request_hook=note)
    )
    return TableLedger(service, prefix or "t" + uuid.uuid4().hex[:12]), seen


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


def test_the_outcome_of_a_worker_s_own_reservation_is_written_without_reading_it_first(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.put_decision(skip("d1", outcome="reserved"))
    seen.clear()
    ledger.put_decision(skip("d1", outcome="submitted"))
    # the worker that wrote the reservation knows its ETag: the outbox row, then the rewrite,
    # conditional on that ETag (was: a read of the record first)
    outbox = ledger.names["outbox"]
    assert seen == [f"POST {outbox}", "POST $batch"]
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "submitted")]


def test_a_rewrite_reads_the_record_and_writes_again_conditionally_in_one_transaction(azurite: Azurite) -> None:
    first, _ = counted_ledger(azurite)
    first.put_decision(skip("d1", outcome="reserved"))
    ledger, seen = counted_ledger(azurite, first.prefix)
    seen.clear()
    ledger.put_decision(skip("d1", outcome="submitted"))
    # another worker (a redelivery, the reconciler): a record that notifies is read first (what it
    # may replace), then its outbox row, then the rewrite, conditional on the ETag read
    decisions, outbox = ledger.names["decisions"], ledger.names["outbox"]
    assert seen == [
        f"GET {decisions}(PartitionKey='{decision_partition('d1')}',RowKey='r%3Ad1')",
        f"POST {outbox}",
        "POST $batch",
    ]
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "submitted")]
    seen.clear()
    # a skip over it (a redelivery after the slot was freed): the insert finds the record, its read
    # says it is final; nothing is written
    assert ledger.put_decision(skip("d1", at=NOW + timedelta(hours=1))).outcome == "submitted"
    assert seen == ["POST $batch", f"GET {decisions}(PartitionKey='{decision_partition('d1')}',RowKey='r%3Ad1')"]
    assert [(d.id, d.outcome, d.at) for d in ledger.decisions("m1")] == [("d1", "submitted", iso(NOW))]


def test_a_rewrite_that_loses_to_another_writer_reads_again_and_keeps_the_winner(azurite: Azurite) -> None:
    """The ETag read is stale by the time the rewrite is sent (another instance recorded the outcome
    in between): the transaction fails with 412, the record is read again, and it stands; the
    loser's notification is taken back out of the outbox."""
    winner = skip("d1", outcome="planned", at=NOW + timedelta(seconds=1))
    other: list[TableLedger] = []

    def race(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        if other and request.http_request.method == "POST" and request.http_request.url.endswith("$batch"):
            other.pop().put_decision(winner)  # another instance, just before this rewrite is sent

    service = TableServiceClient.from_connection_string(
        azurite.connection_string, **client_options(raw_request_hook=race)
    )
    ledger = TableLedger(service, "t" + uuid.uuid4().hex[:12])
    ledger.put_decision(skip("d1", outcome="reserved"))
    other.append(TableLedger.from_connection_string(azurite.connection_string, ledger.prefix))

    assert ledger.put_decision(skip("d1", outcome="failed", at=NOW + timedelta(seconds=2))) == winner

    assert other == [] and ledger.get_decision("d1") == winner
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "planned")]
    assert ledger.pending_notifications(10) == []  # neither the loser's failure nor a (silent) plan


def test_a_worker_claims_the_notification_it_wrote_on_the_etag_of_its_insert_without_a_query(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.put_decision(skip("d1", outcome="failed"))
    seen.clear()
    [entry] = ledger.claim_own_notifications(10, NOW, timedelta(seconds=60))
    # one conditional update of its row (was, as a delivery ended: a query of the outbox, then that update)
    assert seen == [f"PATCH {ledger.names['outbox']}(PartitionKey='outbox',RowKey='{entry.id}')"]
    assert entry.notification.data["id"] == "d1"


def test_a_drain_claims_and_marks_what_it_sends_in_one_transaction_each_and_each_alone_when_one_was_taken(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    for n in range(3):
        ledger.put_decision(skip(f"d{n}", outcome="failed"))
    ledger.claim_own_notifications(10, NOW - timedelta(hours=1), timedelta(seconds=1))  # not this test's: lapsed
    seen.clear()
    claimed = ledger.claim_notifications(10, NOW, timedelta(seconds=60))
    ledger.mark_notified([e.id for e in claimed], NOW)
    outbox = ledger.names["outbox"]
    assert len(claimed) == 3 and seen == [f"GET {outbox}()", "POST $batch", "POST $batch"]  # was: 1 + 3 + 3

    other, _ = counted_ledger(azurite, ledger.prefix)
    for n in range(3, 6):
        ledger.put_decision(skip(f"d{n}", outcome="failed"))
    [taken] = other.claim_notifications(1, NOW, timedelta(seconds=60))  # another sender claims one of them
    seen.clear()
    mine = ledger.claim_own_notifications(10, NOW, timedelta(seconds=60))
    # the transaction fails on the one taken (its ETag changed): each alone, and the one taken is left out
    assert seen[0] == "POST $batch" and len(seen) == 1 + 3 and all(r.startswith("PATCH ") for r in seen[1:])
    expected = {notification_id(f"d{n}", "failed") for n in range(3, 6)}
    assert len(mine) == 2 and {e.id for e in mine} | {taken.id} == expected


def test_decisions_spread_over_the_shards_and_every_trail_reads_newest_first_across_them(azurite: Azurite) -> None:
    ledger, _ = counted_ledger(azurite)
    ids = [f"d{n:02d}" for n in range(40)]
    for minute, decision_id in enumerate(ids):
        ledger.put_decision(skip(decision_id, at=NOW.replace(minute=minute)))
    assert {decision_partition(i) for i in ids} == set(DECISION_PARTITIONS)  # forty ids reach all eight
    newest_first = ids[::-1]
    assert [d.id for d in ledger.decisions(limit=100)] == newest_first
    assert [d.id for d in ledger.decisions("m1", limit=7)] == newest_first[:7]
    assert [d.id for d in ledger.decisions(event_id="e1", limit=3)] == newest_first[:3]
    assert ledger.get_decision("d17") is not None and ledger.get_decision("d17").at == iso(NOW.replace(minute=17))  # type: ignore[union-attr]


def test_the_ledger_reads_the_proxy_environment_once_and_uses_it_when_it_is_set() -> None:
    """requests would read the environment on every request; the ledger's session trusts it only when
    a proxy variable is set, and otherwise gets the CA bundle requests would have used, once."""

    def session_of(environ: dict[str, str]) -> tuple[bool, object, float, float]:
        with client_options(environ)["transport"] as transport:  # opens the requests session
            config = transport.connection_config
            return bool(transport.session.trust_env), config.verify, config.timeout, config.read_timeout

    assert session_of({"PATH": "/bin", "HOME": "/root"}) == (False, True, 5, 10)  # the timeouts kept
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        assert session_of({"PATH": "/bin", name: "x"}) == (True, True, 5, 10), name
    assert session_of({"CURL_CA_BUNDLE": "/c.pem"}) == (False, "/c.pem", 5, 10)
    assert session_of({"CURL_CA_BUNDLE": "/c.pem", "REQUESTS_CA_BUNDLE": "/r.pem"})[:2] == (False, "/r.pem")
    options = client_options({}, raw_request_hook=print)
    assert options["retry_total"] == 2 and options["raw_request_hook"] is print


def _used(n: int) -> Any:
    """A change that counts a retrain into the model's budget, and returns the count it saw."""
    return lambda s: (replace(s, budget_used=s.budget_used + n), s.budget_used)


def test_a_worker_s_next_change_to_a_model_is_one_conditional_write_without_a_read(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    models = ledger.names["models"]
    seen.clear()
    assert ledger.update_model("m1", _used(1)) == 0  # never seen: a read (404), then an insert
    assert seen == [f"GET {models}(PartitionKey='m1',RowKey='')", f"POST {models}"]
    seen.clear()
    assert ledger.update_model("m1", _used(1)) == 1
    assert seen == [f"PUT {models}(PartitionKey='m1',RowKey='')"]  # was: a read first
    seen.clear()
    # a change that writes nothing is not decided on what the worker remembers: the row is read
    assert ledger.update_model("m1", lambda s: (None, s.budget_used)) == 2
    assert seen == [f"GET {models}(PartitionKey='m1',RowKey='')"]


def test_a_change_on_a_row_another_worker_changed_since_is_applied_again_to_the_row_read(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    other = TableLedger.from_connection_string(azurite.connection_string, ledger.prefix)
    ledger.update_model("m1", _used(1))
    other.update_model("m1", _used(10))  # another instance, meanwhile
    seen.clear()
    assert ledger.update_model("m1", _used(1)) == 11  # the count the other worker left, not the one remembered
    models = ledger.names["models"]
    point = f"{models}(PartitionKey='m1',RowKey='')"
    assert seen == [f"PUT {point}", f"GET {point}", f"PUT {point}"]  # 412 on the guess, read, write
    assert ledger.get_model("m1").budget_used == 12 and other.get_model("m1").budget_used == 12
    seen.clear()
    # the other worker's guess is stale now: its write is refused, and it reads what this one wrote
    assert other.update_model("m1", lambda s: (None, s.budget_used)) == 12
