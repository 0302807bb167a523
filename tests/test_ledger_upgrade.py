"""A Table ledger written by the code before the layout change (a model's state in the ``models``
table, decisions in the shards ``d0`` .. ``d7``, notifications in the ``outbox`` partition), then
used by this code: what was written reads as it was, the work it left is finished once, its outbox
drains, and the retention removes it. The rows are those the code of that commit wrote
(tests/data/ledger-before.json, made by scripts/ledger_before.py from git)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from function_app.adapters.table_entities import get_body
from function_app.adapters.table_ledger import TableLedger
from handlers.notify import notification_id
from handlers.ports import Notification
from handlers.records import ModelState
from tests.azurite import Azurite
from tests.builders import MODEL, drift_event
from tests.fakes import Clock
from tests.ledgers import LedgerSpec
from tests.world import World

BEFORE = json.loads((Path(__file__).parent / "data" / "ledger-before.json").read_text())
FIRST, REFUSED = BEFORE["decisions"]  # the retrain that was submitted, the drift event refused


class Topic:
    """The notification topic: takes every post."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def publish(self, notifications: Any) -> None:
        self.sent.extend(notifications)


def ledger_before(azurite: Azurite) -> LedgerSpec:
    """The rows as the code before wrote them, in tables of their own."""
    prefix = "up" + uuid.uuid4().hex[:10]
    TableLedger.from_connection_string(azurite.connection_string, prefix)  # the tables
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    for suffix, rows in BEFORE["rows"].items():
        table = service.get_table_client(prefix + suffix)
        for row in rows:
            table.create_entity(row)
    return LedgerSpec("table", azurite.connection_string, prefix)


def world_on(spec: LedgerSpec, **options: Any) -> World:
    return World(spec, clock=Clock(datetime.fromisoformat(BEFORE["now"])), **options)


def test_a_ledger_written_by_the_code_before_reads_as_it_was_written(azurite: Azurite) -> None:
    world = world_on(ledger_before(azurite))
    ledger = world.ledger
    [state] = ledger.list_models()
    held = state.flights["retrain"]  # the worker that died after reserving
    assert (state.model, held.status) == (MODEL, "reserved")
    first = ledger.get_decision(FIRST)
    assert first is not None and first.outcome == "submitted"
    trail = [(d.id, d.outcome) for d in ledger.decisions()]
    assert trail[0] == (held.decision, "reserved") and {FIRST, REFUSED} <= {i for i, _ in trail}
    assert len(trail) == len({i for i, _ in trail}) == 4
    assert [d.id for d in ledger.decisions(MODEL)] == [i for i, _ in trail]
    # what retirement reads: the model's records of the layout before, in the shards, but its refusal
    history = [d.id for d in ledger.model_history(MODEL)]
    assert history == [i for i, _ in trail if i != REFUSED] and FIRST in history
    assert [d.id for d in ledger.decisions(event_id="before-1")] == [FIRST]
    assert [n.id for n in ledger.pending_notifications(10)] == [notification_id(FIRST, "submitted")]
    again = world.deliver(drift_event(event_id="before-1"))  # a redelivery of an event it finished
    assert again.status == "duplicate" and [d.id for d in again.decisions] == [FIRST]


def test_the_work_the_code_before_left_is_finished_once_and_its_outbox_drains(azurite: Azurite) -> None:
    topic = Topic()
    world = world_on(ledger_before(azurite), notifier=topic)
    held = world.ledger.get_model(MODEL).flights["retrain"]
    world.clock.advance(minutes=5)  # past the reservation's lease
    report = world.reconcile()
    assert [(r.id, r.outcome) for r in report.resumed] == [(held.decision, "submitted")]
    assert len(world.actions.submissions) == 1
    flight = world.ledger.get_model(MODEL).flights["retrain"]
    assert (flight.decision, flight.status) == (held.decision, "submitted")
    # the outcome is in its model's partition; the reserved record of the layout before is gone
    assert [d.outcome for d in world.ledger.decisions() if d.id == held.decision] == ["submitted"]
    assert world.ledger.decisions(outcome="reserved") == []
    sent = {n.id for n in topic.sent}
    assert sent == {notification_id(FIRST, "submitted"), notification_id(held.decision, "submitted")}
    assert world.ledger.pending_notifications(10) == []
    # the event that worker never finished, redelivered: answered with what the reconciler recorded
    again = world.deliver(drift_event(event_id="before-3"))
    assert [(d.id, d.outcome) for d in again.decisions] == [(held.decision, "submitted")]
    assert len(world.actions.submissions) == 1


def test_the_retention_removes_what_the_code_before_wrote(azurite: Azurite) -> None:
    world = world_on(ledger_before(azurite))
    ledger = world.ledger
    # the three finished events and three final records; never the reserved record
    assert ledger.purge(world.clock() + timedelta(days=1)) == 6
    assert [d.outcome for d in ledger.decisions()] == ["reserved"]
    assert ledger.pending_notifications(10) == []
    assert [s.model for s in ledger.list_models()] == [MODEL]


def test_a_worker_of_the_code_before_still_running_can_no_longer_read_a_model_this_code_touched(
    azurite: Azurite,
) -> None:
    """A deployment that overlaps: the first read of a model by this code takes its state from the
    code before's workers. The row they read it from (the ``models`` table's, whose body the code
    before parses as the model's state: ``ModelState.from_dict(json.loads(body))``, then writes back
    on its ETag) no longer parses, so one of them still running fails on the model instead of
    reserving on a state this code no longer writes there; the state itself is kept."""
    spec = ledger_before(azurite)
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    models = service.get_table_client(spec.prefix + "models")
    [row] = models.list_entities()
    before = ModelState.from_dict(json.loads(get_body(row)))  # what a worker of the code before reads
    assert before.flights["retrain"].status == "reserved"
    world = world_on(spec)
    assert world.ledger.get_model(MODEL) == replace(before, etag=None)  # this code reads it as it was
    row = models.get_entity(MODEL, "")
    with pytest.raises(KeyError, match="model"):
        ModelState.from_dict(json.loads(get_body(row)))  # the code before's read of it: fails, acts on nothing
    assert world_on(spec).ledger.get_model(MODEL) == replace(before, etag=None)  # another worker of this code
    assert [s.model for s in world.ledger.list_models()] == [MODEL]
