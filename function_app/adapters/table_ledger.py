"""The ledger on Azure Table Storage: what keeps many instances agreeing in Azure.

Every write that decides something is conditional, so no read-modify-write can race:

- an event is claimed by *inserting* its entity (insert-if-absent: one instance gets 204, the rest 409);
  an unfinished claim whose lease ran out is taken over by an update conditional on its ETag;
- a model's guard state (cooldown, single-flight, daily budget) is changed by an update conditional
  on the ETag that was read (or an insert, for a model without a state row); on 412 or 409 the
  change is re-read and re-applied to the state as it is then.

Tables (names are ``RETRAIN_TABLE_PREFIX`` + the suffix) and keys, chosen so that what must change
together is one entity group transaction (one partition of one table):

========== ============================= ============================ ===================================
table      PartitionKey                  RowKey                       read by
========== ============================= ============================ ===================================
events     claim key (channel, event     ``""``                       claim_event: point read
           digest)
decisions  ``m:<model>`` (``-``: the     ``state``: the model's guard the guards: point read + ETag write;
           decisions of no model)        state; ``r:<id>``: a record; the reconciler: one query per model
                                         ``a:``/``e:<event digest>:`` (state and pending ``o:`` rows);
                                         + time + id: its trail rows; a record: point read; trails:
                                         ``o:<notification id>``: its a RowKey range per partition, merged
                                         notification
models     the model                     ``""``                       the directory: one query lists the
                                                                      models (and their partitions)
========== ============================= ============================ ===================================

A worker that serves lists its policy's models in the directory as it starts (``adopt``, in
:mod:`~function_app.adapters.table_models`), so that a model's first event writes nothing there.

A model's state row, its decisions, their trail rows and their notifications share its partition, so
a reservation (the slot taken and the ``reserved`` record of what took it) is one transaction, and an
outcome (the record, its notification, the slot settled) another: never a slot without the record
of its decision, never a record without its notification. Trail rows are keyed by inverted creation
time, so a range query returns newest first; a trail of all decisions, or of an event's, reads the
same range in each partition the directory lists (and ``-``) and merges them. A record is found by
its id in its model's partition, when the caller knows the model (the executor, the reconciler, a
claim row, which keeps each decision's partition); by its id alone, in each partition. Writes across
partitions are not atomic: a decision is written before the event is marked done, so a crash in
between leaves a claim that the next delivery redoes (same decision ids, same rows). Table Storage
has no TTL: :meth:`purge` (run by the reconciler) deletes what is older than the retention.

The layout before (a model's state in ``models``, records in the shards ``d0`` .. ``d7`` of
``decisions``, notifications in the ``outbox`` table's ``outbox`` partition) is still read: a
model's state from its ``models`` row until its state row is first written (which copies it), a
record from its shard when its model's partition has none (rewritten in the partition, the old rows
deleted), the trails merged with the shards', the old outbox drained until empty, and all of it
purged by the retention (tests/test_ledger_upgrade.py). See docs/ledger.md.

Its parts, one reason to change each: entities and keys (:mod:`~function_app.adapters.table_entities`),
events (:mod:`~function_app.adapters.table_events`), models and the directory
(:mod:`~function_app.adapters.table_models`), the outbox (:mod:`~function_app.adapters.table_outbox`),
reads of decisions (:mod:`~function_app.adapters.table_trails`), writes of decisions
(:mod:`~function_app.adapters.table_decisions`); here the tables, the clients and the retention.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    BATCH,
    DECISION_PARTITIONS,
    OUTBOX,
    RECORD,
    TABLES,
    Stored,
    client_options,
)
from function_app.adapters.table_events import TableEvents
from handlers.records import iso

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings

_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,50}$")


class TableLedger(TableEvents):
    """``sleep`` and ``rng``: the pause and the jitter between two tries of a conflicting model write."""

    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = "retrain",
        *,
        create: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``sleep``, ``rng``: the retries' waits and jitter; ``monotonic``, ``wall``: this worker's own clocks,
        in seconds, on which it tells how long it has held a claim (a stall counts on either)."""
        if not _PREFIX.match(prefix):
            raise ValueError(
                f"RETRAIN_TABLE_PREFIX={prefix!r}: use a letter then letters or digits (table names allow no other)"
            )
        self.service = service
        self.prefix = prefix
        self.sleep = sleep
        self.monotonic = monotonic
        self.wall = wall
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.names = {suffix: f"{prefix}{suffix}" for suffix in TABLES}
        self.events, self.models, self.decision_rows, self.outbox = (
            service.get_table_client(self.names[s]) for s in TABLES
        )
        # The record rows this ledger wrote last, by decision id: (record, created, ETag). A record
        # rewritten by the same worker (``reserved``, then its outcome) is updated conditionally on
        # that ETag without reading it first; a 412 (another writer since) reads it, as before.
        self._written: dict[str, Stored] = {}
        # Each model's row as this worker last read or wrote it: (body, ETag). A change to a model is
        # first tried on it, as a write conditional on that ETag, without reading the row; a 412
        # (another writer since) reads it, as before. Nothing is decided on it without a write: a
        # change that writes nothing is applied again to the row read.
        self._rows: dict[str, tuple[str, str]] = {}
        # The outbox rows this worker inserted, not claimed yet: sent as its delivery ends, claimed
        # on the ETag their insert returned (:meth:`claim_own_notifications`), without a query.
        self._own: dict[str, tuple[dict[str, Any], str]] = {}
        self._listed: set[str] = set()
        self._native: set[str] = set()
        self._survey: tuple[float, dict[str, list[Any]]] | None = None
        self._notes: dict[str, str] = {}
        self._where: dict[str, str] = {}
        self._seen: dict[str, Stored] = {}
        self._fresh: dict[str, tuple[float, float]] = {}
        self._send_lease: timedelta | None = None
        if create:
            self.create_tables()

    @classmethod
    def from_connection_string(
        cls, connection: str, prefix: str = "retrain", *, monotonic: Callable[[], float] = time.monotonic
    ) -> TableLedger:
        return cls(
            TableServiceClient.from_connection_string(connection, **client_options()), prefix, monotonic=monotonic
        )

    @classmethod
    def from_settings(cls, settings: Settings, credential: TokenCredential) -> TableLedger:
        """The ledger of RETRAIN_TABLES_CONNECTION, else of RETRAIN_TABLES_ACCOUNT_URL with ``credential``
        (the worker's one: :func:`function_app.runtime.make_credential`)."""
        if settings.tables_connection:
            return cls.from_connection_string(settings.tables_connection, settings.table_prefix)
        if not settings.tables_account_url:
            raise ValueError("RETRAIN_LEDGER=table needs RETRAIN_TABLES_ACCOUNT_URL or RETRAIN_TABLES_CONNECTION")
        service = TableServiceClient(settings.tables_account_url, credential=credential, **client_options())
        return cls(service, settings.table_prefix)

    def create_tables(self) -> None:
        for name in self.names.values():
            with translated(f"creating ledger table {name}"), contextlib.suppress(ResourceExistsError):
                self.service.create_table(name)

    # ------------------------------------------------------------------ retention

    def purge(self, before: datetime) -> int:
        """Delete finished events received, and decisions made, before ``before`` (never a decision
        still 'reserved': the reconciler needs it). Table Storage has no TTL; this is the retention."""
        cutoff = iso(before)
        n = 0
        with translated("purging old ledger records"):
            n += self._delete(
                self.events,
                self.events.query_entities(
                    "status eq 'done' and received_at lt @cutoff",
                    parameters={"cutoff": cutoff},
                    select=["PartitionKey", "RowKey"],
                ),
            )
            # each model's partition, ``-``, and the shards of the layout before: records, trail rows and
            # notifications (their outcome column is the record's: never reserved), never a state row
            for pk in [*self._partitions(), *DECISION_PARTITIONS]:
                rows = list(
                    self.decision_rows.query_entities(
                        "PartitionKey eq @pk and created lt @cutoff and outcome ne 'reserved'",
                        parameters={"pk": pk, "cutoff": cutoff},
                        select=["PartitionKey", "RowKey"],
                    )
                )
                n += sum(1 for row in rows if str(row["RowKey"]).startswith(RECORD))
                self._delete_in_batches(self.decision_rows, rows)
            self._delete(
                self.outbox,
                self.outbox.query_entities(
                    "PartitionKey eq @pk and created lt @cutoff",  # sent or not: kept for the retention
                    parameters={"pk": OUTBOX, "cutoff": cutoff},
                    select=["PartitionKey", "RowKey"],
                ),
            )
        return n

    @classmethod
    def _delete_in_batches(cls, table: TableClient, rows: list[Any]) -> None:
        """Rows of one partition, deleted a hundred per transaction; a batch that another purge got to
        first (a row already gone fails the whole batch) is deleted row by row."""
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            try:
                table.submit_transaction([("delete", row) for row in batch])
            except TableTransactionError:
                cls._delete(table, batch)

    @staticmethod
    def _delete(table: TableClient, entities: Iterable[Any]) -> int:
        n = 0
        for entity in list(entities):
            try:
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                n += 1
            except ResourceNotFoundError:
                pass
        return n
