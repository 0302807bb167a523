"""What the Table ledger costs in round trips, on Azurite: a decision's record, its trail rows, its
notification and the change of its model's slot it makes are one entity group transaction in its
model's partition; a trail is read from every partition it may be in and merged, newest first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.pipeline import PipelineRequest
from azure.data.tables import TableServiceClient

from function_app.adapters.table_entities import client_options
from function_app.adapters.table_ledger import TableLedger
from handlers.notify import notification_id
from handlers.records import DecisionRecord, iso
from tests.azurite import Azurite
from tests.ledgers import counted_ledger, point

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


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


def refusal(decision_id: str, at: datetime = NOW) -> DecisionRecord:
    """A guard's refusal (the record most of a storm's deliveries write)."""
    return replace(skip(decision_id, at), details={"guard": "cooldown"})


def test_a_guard_s_refusal_is_one_transaction_in_its_shard_after_one_read_of_its_model_s_partition(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    seen.clear()  # the tables' creation
    for n, at in enumerate((NOW, NOW + timedelta(seconds=1)), 1):
        ledger.put_decision(refusal(f"d{n}", at))
        # one read of the model's partition (a record there stands), then the record with its trail
        # rows of all, its model and its event in its id's shard: the model's partition, which each
        # delivery reads and writes, does not grow with refusals
        assert seen == [point(ledger, "m:m1", f"d{n}"), "POST $batch"]
        seen.clear()
    assert list(ledger.decision_rows.query_entities("PartitionKey eq 'm:m1'")) == []
    assert [d.id for d in ledger.decisions()] == ["d2", "d1"]
    assert [d.id for d in ledger.decisions("m1")] == ["d2", "d1"]
    assert [d.id for d in ledger.decisions(event_id="e1")] == ["d2", "d1"]


def test_the_first_write_of_any_other_decision_is_one_transaction_in_its_model_s_partition(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    seen.clear()  # the tables' creation
    ledger.put_decision(skip("d1"))
    # one read of the record's shard (a guard's refusal there stands), the model's row in the directory
    # (the first write of a model this worker has not seen), then the record with its trail rows
    assert seen == [point(ledger, "d6", "d1"), f"POST {ledger.names['models']}", "POST $batch"]
    seen.clear()
    ledger.put_decision(replace(skip("d2", at=NOW + timedelta(seconds=1)), outcome="reserved"))
    assert seen == ["POST $batch"]  # a reservation reads nothing more: a refusal gives way to it
    # ... and it is in every trail it belongs to: all, its model's and its event's
    assert [d.id for d in ledger.decisions()] == ["d2", "d1"]
    assert [d.id for d in ledger.decisions("m1")] == ["d2", "d1"]
    assert [d.id for d in ledger.decisions(event_id="e1")] == ["d2", "d1"]


def test_a_reservation_over_a_refusal_in_its_shard_hides_it_and_moves_it_when_the_worker_read_it(
    azurite: Azurite,
) -> None:
    first, _ = counted_ledger(azurite)
    first.put_decision(refusal("d1"))
    first.put_decision(refusal("d2"))
    ledger, _ = counted_ledger(azurite, first.prefix)
    later = NOW + timedelta(minutes=5)
    # d1 read first (as the executor reads a keyed decision before judging it again): its refusal's
    # rows leave its shard; d2 not read: its refusal stays behind the reservation, never shown
    assert ledger.get_decision("d1", "m1") == refusal("d1")
    for d in ("d1", "d2"):
        ledger.put_decision(replace(skip(d, later), outcome="reserved"))
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d2", "reserved"), ("d1", "reserved")]
    assert [(d.id, d.outcome) for d in ledger.decisions()] == [("d2", "reserved"), ("d1", "reserved")]
    fresh, _ = counted_ledger(azurite, first.prefix)
    assert [fresh.get_decision(d).outcome for d in ("d1", "d2")] == ["reserved", "reserved"]  # type: ignore[union-attr]
    assert [fresh.get_decision(d, "m1").outcome for d in ("d1", "d2")] == ["reserved", "reserved"]  # type: ignore[union-attr]
    shards = [e["RowKey"] for e in fresh.decision_rows.query_entities("PartitionKey ge 'd' and PartitionKey lt 'e'")]
    assert "r:d1" not in shards and "r:d2" in shards


def test_the_outcome_of_a_worker_s_own_reservation_and_its_notification_are_one_transaction(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.put_decision(skip("d1", outcome="reserved"))
    seen.clear()
    ledger.put_decision(skip("d1", outcome="submitted"))
    # the worker that wrote the reservation knows its ETag: the rewrite, conditional on that ETag, and
    # the notification's outbox row, in the record's partition (was: an outbox insert, then the rewrite)
    assert seen == ["POST $batch"]
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "submitted")]
    assert [n.id for n in ledger.pending_notifications(10)] == [notification_id("d1", "submitted")]


def test_a_rewrite_by_another_worker_finds_the_record_and_writes_again_conditionally_in_one_transaction(
    azurite: Azurite,
) -> None:
    first, _ = counted_ledger(azurite)
    first.put_decision(skip("d1", outcome="reserved"))
    ledger, seen = counted_ledger(azurite, first.prefix)
    seen.clear()
    ledger.put_decision(skip("d1", outcome="submitted"))
    # another worker (a redelivery, the reconciler): the model is in the directory already (409), the
    # insert finds the record, which is read, then the rewrite, conditional on the ETag read
    decisions, models = ledger.names["decisions"], ledger.names["models"]
    point = f"{decisions}(PartitionKey='m%3Am1',RowKey='r%3Ad1')"
    shard = f"{decisions}(PartitionKey='d6',RowKey='r%3Ad1')"  # a guard's refusal there would stand
    assert seen == [f"GET {shard}", f"POST {models}", "POST $batch", f"GET {point}", "POST $batch"]
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "submitted")]
    seen.clear()
    # a skip over it (a redelivery after the slot was freed): the insert finds the record, its read
    # says it is final; nothing is written
    assert ledger.put_decision(skip("d1", at=NOW + timedelta(hours=1))).outcome == "submitted"
    assert seen == ["POST $batch", f"GET {point}"]
    assert [(d.id, d.outcome, d.at) for d in ledger.decisions("m1")] == [("d1", "submitted", iso(NOW))]


def test_a_rewrite_that_loses_to_another_writer_reads_again_and_keeps_the_winner(azurite: Azurite) -> None:
    """The ETag known is stale by the time the rewrite is sent (another instance recorded the outcome
    in between): the transaction fails with 412, the record is read again, and it stands; the
    loser's notification, in the same transaction, was never written."""
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


def test_a_slot_and_the_record_of_what_took_it_are_one_transaction_and_a_final_record_takes_nothing(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.update_model("m1", _used(0))
    seen.clear()
    took, stored = ledger.reserve("m1", _used(1), lambda _: skip("d1", outcome="reserved"))
    assert (took, stored) == (0, skip("d1", outcome="reserved")) and seen == ["POST $batch"]
    seen.clear()
    # the outcome and the slot settled: one transaction again, on the ETags the reservation returned
    done = ledger.record_and_update("m1", skip("d1", outcome="failed"), lambda s, r: replace(s, budget_used=0))
    assert done.outcome == "failed" and seen == ["POST $batch"]
    assert ledger.get_model("m1").budget_used == 0
    # a reservation whose record is final already: nothing is written, the slot is not taken
    other = TableLedger.from_connection_string(azurite.connection_string, ledger.prefix)
    took, stored = other.reserve("m1", _used(1), lambda _: skip("d1", outcome="reserved"))
    assert stored is not None and stored.outcome == "failed" and other.get_model("m1").budget_used == 0


def test_a_worker_claims_the_notification_it_wrote_on_the_etag_of_its_insert_without_a_query(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.put_decision(skip("d1", outcome="failed"))
    seen.clear()
    [entry] = ledger.claim_own_notifications(10, NOW, timedelta(seconds=60))
    # one conditional update of its row (was, as a delivery ended: a query of the outbox, then that update)
    key = f"o%3A{entry.id}"
    assert seen == [f"PATCH {ledger.names['decisions']}(PartitionKey='m%3Am1',RowKey='{key}')"]
    assert entry.notification.data["id"] == "d1"


def test_a_worker_that_sends_what_it_writes_writes_it_claimed_and_sends_it_without_a_claim(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    ledger.sends_own(timedelta(seconds=60))
    ledger.put_decision(skip("d1", outcome="failed"))
    seen.clear()
    [entry] = ledger.claim_own_notifications(10, NOW + timedelta(seconds=5), timedelta(seconds=60))
    assert seen == []  # claimed as it was written: no request
    ledger.mark_notified([entry.id], NOW + timedelta(seconds=5))
    assert seen == [f"PATCH {ledger.names['decisions']}(PartitionKey='m%3Am1',RowKey='o%3A{entry.id}')"]
    assert ledger.pending_notifications(10) == []
    # past half its claim, it is claimed again before it is sent (the post must not outlive the claim)
    ledger.put_decision(skip("d2", outcome="failed"))
    seen.clear()
    [late] = ledger.claim_own_notifications(10, NOW + timedelta(seconds=40), timedelta(seconds=60))
    assert late.notification.data["id"] == "d2" and [r.split(" ")[0] for r in seen] == ["PATCH"]


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
    models, decisions, outbox = (ledger.names[t] for t in ("models", "decisions", "outbox"))
    # the directory, each model's partition and ``-``, the layout before's outbox; the claim, the mark
    reads = [f"GET {models}()", f"GET {decisions}()", f"GET {decisions}()", f"GET {outbox}()"]
    assert len(claimed) == 3 and seen == [*reads, "POST $batch", "POST $batch"]  # was: 1 + 3 + 3

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


def test_a_reconciler_pass_reads_each_model_s_state_and_pending_notifications_in_one_request(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    for model in ("m1", "m2", "m3"):
        ledger.update_model(model, _used(1))
    ledger.put_decision(replace(skip("d1", outcome="failed"), model="m2"))
    seen.clear()
    assert [s.model for s in ledger.list_models()] == ["m1", "m2", "m3"]
    claimed = ledger.claim_notifications(10, NOW, timedelta(seconds=60))
    models, decisions, outbox = (ledger.names[t] for t in ("models", "decisions", "outbox"))
    # the directory, one query per model (its state row and pending notifications), then the drain:
    # ``-`` and the layout before's outbox (the models' partitions were read by the survey), the claim
    assert seen == [
        f"GET {models}()",
        *[f"GET {decisions}()"] * 3,
        f"GET {decisions}()",
        f"GET {outbox}()",
        f"PATCH {decisions}(PartitionKey='m%3Am2',RowKey='o%3A{claimed[0].id}')",
    ]
    assert [e.notification.data["id"] for e in claimed] == ["d1"]


def test_a_model_s_history_is_one_query_of_its_partition_once_the_directory_says_this_layout_made_it(
    azurite: Azurite,
) -> None:
    ledger, _ = counted_ledger(azurite)
    ledger.update_model("m1", _used(1))
    ledger.put_decision(replace(skip("promoted", outcome="submitted"), action="promote"))
    for n in range(3):
        ledger.put_decision(refusal(f"refused-{n}", NOW + timedelta(seconds=n + 1)))
    other, other_seen = counted_ledger(azurite, prefix=ledger.prefix)
    other_seen.clear()  # its tables, created
    assert [d.id for d in other.model_history("m1")] == ["promoted"]  # not known: the shards read too
    assert other_seen == [f"GET {ledger.names['decisions']}()"] * (1 + 8)
    other.list_models()
    other_seen.clear()

    assert [d.id for d in other.model_history("m1")] == ["promoted"]
    assert other_seen == [f"GET {ledger.names['decisions']}()"]


def test_models_keep_their_decisions_in_their_own_partitions_and_every_trail_reads_newest_first_across_them(
    azurite: Azurite,
) -> None:
    ledger, _ = counted_ledger(azurite)
    ids = [f"d{n:02d}" for n in range(40)]
    models = ["m1", "m2", "m3", None]
    for minute, decision_id in enumerate(ids):
        ledger.put_decision(replace(skip(decision_id, at=NOW.replace(minute=minute)), model=models[minute % 4]))
    newest_first = ids[::-1]
    assert [d.id for d in ledger.decisions(limit=100)] == newest_first
    assert [d.id for d in ledger.decisions("m2", limit=3)] == [i for i in newest_first if int(i[1:]) % 4 == 1][:3]
    assert [d.id for d in ledger.decisions(event_id="e1", limit=3)] == newest_first[:3]
    other = TableLedger.from_connection_string(azurite.connection_string, ledger.prefix)
    for decision_id in ("d17", "d19"):  # by its id alone, on a worker that never saw it (d19: of no model)
        found = other.get_decision(decision_id)
        assert found is not None and found.at == iso(NOW.replace(minute=int(decision_id[1:])))


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
    models, decisions = ledger.names["models"], ledger.names["decisions"]
    point = f"{decisions}(PartitionKey='m%3Am1',RowKey='state')"
    seen.clear()
    # never seen: a read (404), the model's row in the directory, then the insert of its state row
    assert ledger.update_model("m1", _used(1)) == 0
    assert seen == [f"GET {point}", f"POST {models}", f"POST {decisions}"]
    seen.clear()
    assert ledger.update_model("m1", _used(1)) == 1
    assert seen == [f"PUT {point}"]  # was: a read first
    seen.clear()
    # a change that writes nothing is not decided on what the worker remembers: the row is read
    assert ledger.update_model("m1", lambda s: (None, s.budget_used)) == 2
    assert seen == [f"GET {point}"]


def test_a_change_on_a_row_another_worker_changed_since_is_applied_again_to_the_row_read(azurite: Azurite) -> None:
    ledger, seen = counted_ledger(azurite)
    other = TableLedger.from_connection_string(azurite.connection_string, ledger.prefix)
    ledger.update_model("m1", _used(1))
    other.update_model("m1", _used(10))  # another instance, meanwhile
    seen.clear()
    assert ledger.update_model("m1", _used(1)) == 11  # the count the other worker left, not the one remembered
    point = f"{ledger.names['decisions']}(PartitionKey='m%3Am1',RowKey='state')"
    assert seen == [f"PUT {point}", f"GET {point}", f"PUT {point}"]  # 412 on the guess, read, write
    assert ledger.get_model("m1").budget_used == 12 and other.get_model("m1").budget_used == 12
    seen.clear()
    # the other worker's guess is stale now: its write is refused, and it reads what this one wrote
    assert other.update_model("m1", lambda s: (None, s.budget_used)) == 12
