"""The ledger on Azure Table Storage: what keeps many instances agreeing in Azure.

Every write that decides something is conditional, so no read-modify-write can race:

- an event is claimed by *inserting* its entity (insert-if-absent: one instance gets 204, the rest 409);
  an unfinished claim whose lease ran out is taken over by an update conditional on its ETag;
- a model's guard state (cooldown, single-flight, daily budget) is changed by an update conditional
  on the ETag that was read (or an insert, for a model never seen); on 412 or 409 the change is
  re-read and re-applied to the state as it is then.

Tables (names are ``RETRAIN_TABLE_PREFIX`` + the suffix) and keys, chosen for the queries made:

========== =================================== ===================== =================================
table      PartitionKey                        RowKey                read by
========== =================================== ===================== =================================
events     claim key (channel, event digest)   ``""``                claim_event: point read
models     model name                          ``""``                guards: point read + ETag write
decisions  ``d0`` .. ``d7``: the shard of the  ``r:<id>``; trail     get_decision: point read;
           decision id                         rows ``a:``, ``e:``,  GET /api/decisions: a RowKey
                                               ``m:`` + newest-first range in each shard, merged
                                               time and id
outbox     ``outbox``                          notification id       the drain: ``sent eq ''``, ETag claims
========== =================================== ===================== =================================

A partition per event and model spreads the conditional writes. A decision is one record row and up
to three trail rows (``a:`` for all, ``e:<event digest>:`` found by the event id alone, and
``m:<model digest>:``), keyed by inverted creation time so a range query returns newest first; they
share one partition, the shard its id digests to, so that the four rows are one entity group
transaction: one round trip, and never a record missing from a trail. Eight shards spread the writes
(a partition serves about 2,000 entities a second) and keep partitions small; a trail query reads
the same range in each shard and merges them, newest first. Writes across partitions are not atomic: a
decision is written before the event is marked done, so a crash in between leaves a claim that the
next delivery redoes (same decision ids, same rows). A decision's notification is inserted (if
absent) into the outbox before the decision is written, so a crash in between sends it at least
once, never twice. Table Storage has no TTL: :meth:`purge` (run by the reconciler) deletes what is
older than the retention. See docs/ledger.md.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.sqlite_ledger import event_key
from handlers.errors import PermanentError, TransientError
from handlers.keys import digest
from handlers.notify import notification_of
from handlers.ports import Claim, Notification, OutboxEntry
from handlers.records import DecisionRecord, ModelState, cut, from_iso, iso, may_replace
from handlers.signals import Trigger

if TYPE_CHECKING:
    from function_app.settings import Settings

T = TypeVar("T")

TABLES = ("events", "models", "decisions", "outbox")
DECISIONS = "d"  # the decisions table's partitions: d0..d7, a record and its trail rows in its id's shard
_SHARDS = 8  # fixed for good: a decision's partition is found from its id alone (changing it moves records)
_RECORD = "r:"  # the RowKey prefix of a decision's record row (trail rows start a:, e:, m:)
OUTBOX = "outbox"  # the outbox's one partition
_CHUNK = 30_000  # characters per string property (the limit is 64 KiB of UTF-16)
_MAX_CHUNKS = 30  # an entity holds at most 1 MiB
_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f%]")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,50}$")
_EPOCH_MS_MAX = 10**13
_BATCH = 100  # operations in one entity group transaction
_REMEMBERED = 256  # reserved records whose ETag a worker keeps for their outcome's write
# A transaction's conditional update that lost to another writer (412), or found the row gone (purged).
_CHANGED_MEANWHILE = frozenset({"UpdateConditionNotSatisfied", "ConditionNotMet", "ResourceNotFound"})
_MAX_BATCH_CHARS = 3_500_000  # a transaction's payload is at most 4 MiB; bodies are ASCII JSON
# The SDK's own retries stay short: a ledger that does not answer makes the delivery transient
# (Event Grid redelivers) well inside its 30 s, instead of ten retries with 0.8 s backoff.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "retry_backoff_factor": 0.2,
    "retry_backoff_max": 1,
    "connection_timeout": 5,
    "read_timeout": 10,
}
# The proxy variables requests reads (with their upper-case forms): it looks them up on every request.
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


def client_options(environ: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """The ledger client's options, with a transport of its own that carries the timeouts.

    A requests session that trusts the environment reads it again on every request: the proxy
    variables, the CA bundle, ``~/.netrc`` (about a tenth of a delivery's CPU in the storm test). A
    worker's environment is fixed when it starts, so it is read once here. With a proxy variable set,
    the session keeps reading them (requests applies ``no_proxy`` per URL); otherwise it does not
    look, and the CA bundle that requests would have used (``REQUESTS_CA_BUNDLE``, then
    ``CURL_CA_BUNDLE``) is given to the transport. The ledger sends its own Authorization header, so
    ``.netrc`` has nothing to add."""
    env = os.environ if environ is None else environ
    config = {k: CLIENT_OPTIONS[k] for k in ("connection_timeout", "read_timeout")}
    if any(name.lower() in _PROXY_VARIABLES for name in env):
        transport = RequestsTransport(**config)
    else:
        bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
        verify = {"connection_verify": bundle} if bundle else {}
        transport = RequestsTransport(use_env_settings=False, **config, **verify)
    return {**CLIENT_OPTIONS, "transport": transport, **extra}


def decision_partition(decision_id: str) -> str:
    """The shard that holds a decision's record and trail rows, from its id alone."""
    return f"{DECISIONS}{int(digest('shard', decision_id, length=8), 16) % _SHARDS}"


DECISION_PARTITIONS = tuple(f"{DECISIONS}{n}" for n in range(_SHARDS))


def safe_key(text: str) -> str:
    """A PartitionKey/RowKey may not hold / \\ # ? or control characters: percent-escape them."""
    return _FORBIDDEN.sub(lambda m: f"%{ord(m.group()):02X}", text)


def trail_key(created: str, decision_id: str) -> str:
    """Newest first in RowKey order: milliseconds before a far-future epoch, then the id."""
    moment = from_iso(created)
    ms = int(moment.timestamp() * 1000) if moment else 0
    return f"{_EPOCH_MS_MAX - ms:013d}_{safe_key(decision_id)}"


def record_key(decision_id: str) -> str:
    """The RowKey of a decision's record (its point read)."""
    return f"{_RECORD}{safe_key(decision_id)}"


def trail_prefix(*, event_id: str | None = None, model: str | None = None) -> str:
    """The RowKey prefix of one trail: a decision's event's (any source or model), its model's, or
    all. Event ids and model names are digested: a fixed length, so one prefix is never the start of
    another, and within the 1 KiB a key may hold whatever their length."""
    if event_id is not None:  # as the record keeps it: an id over MAX_TEXT is cut, with its digest
        return f"e:{digest('event', cut(event_id), length=32)}:"
    if model:
        return f"m:{digest('model', model, length=32)}:"
    return "a:"


def _prefix_range(prefix: str) -> tuple[str, str]:
    """``RowKey ge lo and RowKey lt hi`` selects exactly the keys that start with ``prefix``."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _trail_prefixes(record: DecisionRecord) -> list[str]:
    """Each decision is in the trail of all, of its event and of its model (if it concerns one)."""
    prefixes = [trail_prefix(), trail_prefix(event_id=str(record.trigger.get("event_id") or ""))]
    if record.model:
        prefixes.append(trail_prefix(model=record.model))
    return prefixes


def _put_body(entity: dict[str, Any], body: str) -> dict[str, Any]:
    chunks = [body[i : i + _CHUNK] for i in range(0, len(body), _CHUNK)] or [""]
    if len(chunks) > _MAX_CHUNKS:  # records are bounded inside (DecisionRecord.bounded): a bug if it happens
        raise PermanentError(
            f"record of {len(body)} characters is too large for one table entity ({_MAX_CHUNKS * _CHUNK} at most)"
        )
    entity["body"] = chunks[0]
    for n, chunk in enumerate(chunks[1:], start=1):
        entity[f"body{n}"] = chunk
    return entity


def _get_body(entity: dict[str, Any]) -> str:
    parts = [str(entity.get("body") or "")]
    n = 1
    while f"body{n}" in entity:
        parts.append(str(entity[f"body{n}"]))
        n += 1
    return "".join(parts)


def _outbox_entry(entity: Any) -> OutboxEntry:
    attempts = entity.get("attempts")
    return OutboxEntry(
        Notification.from_dict(json.loads(_get_body(entity))),
        attempts if isinstance(attempts, int) else 0,
        str(entity.get("due") or ""),
        str(entity.get("error") or ""),
        str(entity.get("sent") or ""),
        bool(entity.get("dead")),
    )


def _claim_of(entity: Mapping[str, Any]) -> Claim:
    """An event entity as the claim it stores."""
    return Claim(
        str(entity.get("status") or ""),
        tuple(json.loads(entity.get("decisions") or "[]")),
        str(entity.get("received_at") or ""),
        str(entity.get("event_type") or ""),
        entity.get("request") or None,
    )


def _etag(entity: Any) -> str:
    return str(entity.metadata["etag"])


class TableLedger:
    """``sleep`` and ``rng``: the pause and the jitter between two tries of a conflicting model write."""

    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = "retrain",
        *,
        create: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise ValueError(
                f"RETRAIN_TABLE_PREFIX={prefix!r}: use a letter then letters or digits (table names allow no other)"
            )
        self.service = service
        self.prefix = prefix
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.names = {suffix: f"{prefix}{suffix}" for suffix in TABLES}
        self.events, self.models, self.decision_rows, self.outbox = (
            service.get_table_client(self.names[s]) for s in TABLES
        )
        # The record rows this ledger wrote last, by decision id: (record, created, ETag). A record
        # rewritten by the same worker (``reserved``, then its outcome) is updated conditionally on
        # that ETag without reading it first; a 412 (another writer since) reads it, as before.
        self._written: dict[str, tuple[DecisionRecord, str, str]] = {}
        # Each model's row as this worker last read or wrote it: (body, ETag). A change to a model is
        # first tried on it, as a write conditional on that ETag, without reading the row; a 412
        # (another writer since) reads it, as before. Nothing is decided on it without a write: a
        # change that writes nothing is applied again to the row read.
        self._rows: dict[str, tuple[str, str]] = {}
        if create:
            self.create_tables()

    @classmethod
    def from_connection_string(cls, connection: str, prefix: str = "retrain") -> TableLedger:
        return cls(TableServiceClient.from_connection_string(connection, **client_options()), prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> TableLedger:
        if settings.tables_connection:
            return cls.from_connection_string(settings.tables_connection, settings.table_prefix)
        if not settings.tables_account_url:
            raise ValueError("RETRAIN_LEDGER=table needs RETRAIN_TABLES_ACCOUNT_URL or RETRAIN_TABLES_CONNECTION")
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
        service = TableServiceClient(settings.tables_account_url, credential=credential, **client_options())
        return cls(service, settings.table_prefix)

    def create_tables(self) -> None:
        for name in self.names.values():
            with translated(f"creating ledger table {name}"), contextlib.suppress(ResourceExistsError):
                self.service.create_table(name)

    # ------------------------------------------------------------------ events

    def claim_event(self, trigger: Trigger, now: datetime, lease: timedelta) -> Claim:
        key, until = event_key(trigger), iso(now + lease)
        entity = {
            "PartitionKey": key,
            "RowKey": "",
            # informational copies (the key is a digest of the whole): cut to fit a string property
            "source": cut(trigger.source),
            "event_id": cut(trigger.event_id),
            "event_type": cut(trigger.event_type),
            "status": "processing",
            "lease_until": until,
            "decisions": "[]",
            "received_at": iso(now),
            # the request the key is bound to, inserted with the claim: of two requests racing for a
            # key, the one whose insert got 409 reads the winner's binding
            "request": trigger.request or "",
        }
        with translated(f"claiming event {trigger.event_id}"):
            for _ in range(3):  # the entity can vanish between the 409 and the read (purged)
                try:
                    self.events.create_entity(entity)
                    return Claim("new")
                except ResourceExistsError:
                    pass
                try:
                    existing = self.events.get_entity(key, "")
                except ResourceNotFoundError:
                    continue
                if (existing.get("request") or None) != trigger.request:  # never taken over, never answered from
                    return replace(_claim_of(existing), status="reused")
                if existing.get("status") == "done":
                    return Claim("done", tuple(json.loads(existing.get("decisions") or "[]")))
                lease_until = existing.get("lease_until") or ""
                if lease_until and lease_until > iso(now):
                    return Claim("busy")
                try:  # take over the expired claim, unless another instance just did
                    self.events.update_entity(
                        {"PartitionKey": key, "RowKey": "", "lease_until": until},
                        mode=UpdateMode.MERGE,
                        etag=_etag(existing),
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return Claim("retry")
                except (ResourceModifiedError, ResourceNotFoundError):
                    return Claim("busy")
        return Claim("busy")

    def abandon_event(self, trigger: Trigger) -> None:
        key = event_key(trigger)
        with translated(f"releasing the claim on event {trigger.event_id}"):
            try:
                existing = self.events.get_entity(key, "")
                if existing.get("status") != "processing":
                    return
                self.events.update_entity(
                    {"PartitionKey": key, "RowKey": "", "lease_until": ""},
                    mode=UpdateMode.MERGE,
                    etag=_etag(existing),
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                pass  # someone else took or finished it: nothing of ours to release

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        stored = [self.put_decision(record) for record in records]  # first the records, then "done"
        with translated(f"finishing event {trigger.event_id}"):
            self.events.upsert_entity(
                {
                    "PartitionKey": event_key(trigger),
                    "RowKey": "",
                    "status": "done",
                    "lease_until": "",
                    "decisions": json.dumps(list(decision_ids)),
                    "finished_at": iso(now),
                },
                mode=UpdateMode.MERGE,
            )
        return stored

    def event_claim(self, trigger: Trigger) -> Claim | None:
        with translated(f"reading event {trigger.event_id}"):
            try:
                return _claim_of(self.events.get_entity(event_key(trigger), ""))
            except ResourceNotFoundError:
                return None

    def event_status(self, trigger: Trigger) -> tuple[str, list[str]] | None:
        with translated(f"reading event {trigger.event_id}"):
            try:
                entity = self.events.get_entity(event_key(trigger), "", select=["status", "decisions"])
            except ResourceNotFoundError:
                return None
        return str(entity["status"]), list(json.loads(entity.get("decisions") or "[]"))

    # ------------------------------------------------------------------ models

    def _read_model(self, model: str) -> tuple[ModelState, Any]:
        try:
            entity = self.models.get_entity(safe_key(model), "")
        except ResourceNotFoundError:
            return ModelState(model=model), None
        return ModelState.from_dict(json.loads(_get_body(entity)), etag=_etag(entity)), entity

    def get_model(self, model: str) -> ModelState:
        with translated(f"reading model {model}"):
            return self._read_model(model)[0]

    def list_models(self) -> list[ModelState]:
        with translated("listing models"):
            entities = list(self.models.list_entities())
        states = [ModelState.from_dict(json.loads(_get_body(e)), etag=_etag(e)) for e in entities]
        return sorted(states, key=lambda s: s.model)

    def update_model(
        self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]], attempts: int = 64
    ) -> T:
        """Optimistic concurrency: apply ``change`` to the state read, write only if its ETag still
        matches (or, for a new model, only if nobody inserted it first); otherwise read and apply again.
        The first try applies it to the row as this worker last read or wrote it, without a read: the
        write is conditional on that row's ETag all the same, and a change that would write nothing
        is applied again to the row read (nothing is decided on what may be stale)."""
        with translated(f"updating model {model}"):
            known = self._rows.pop(model, None)
            for attempt in range(attempts):
                if known is not None:  # a guess, written only if the row is still what it was
                    body, etag = known
                    known = None
                    state: ModelState = ModelState.from_dict(json.loads(body), etag=etag)
                    guess: str | None = etag
                else:
                    state, entity = self._read_model(model)
                    guess = None
                    etag = _etag(entity) if entity is not None else ""
                    if entity is not None:
                        self._rows[model] = (_get_body(entity), etag)
                new, result = change(state)
                if new is None:
                    if guess is not None:
                        continue  # decided on the guess: read the row and decide on that
                    return result
                body = json.dumps(new.to_dict(), sort_keys=True)
                row = _put_body({"PartitionKey": safe_key(model), "RowKey": ""}, body)
                try:
                    if not etag:
                        written = self.models.create_entity(row)
                    else:
                        written = self.models.update_entity(
                            row,
                            mode=UpdateMode.REPLACE,
                            etag=etag,
                            match_condition=MatchConditions.IfNotModified,
                        )
                except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                    self._rows.pop(model, None)
                    if guess is None:
                        self.sleep(self.rng.uniform(0, min(0.05, 0.002 * 2**attempt)))
                else:
                    if written and written.get("etag"):
                        self._rows[model] = (body, str(written["etag"]))
                    return result
        raise TransientError(f"model {model}: {attempts} concurrent writers in a row; retry later")

    # ------------------------------------------------------------------ decisions

    def put_decision(self, record: DecisionRecord, attempts: int = 8) -> DecisionRecord:
        """The record and its rows in the trail, in one transaction, keyed by the time the decision was
        first written: a rewrite (an outcome after 'reserved') keeps its one place in the trail. A
        record under the same id is replaced only as :func:`handlers.records.may_replace` allows, by
        an update conditional on the ETag read (If-Match), read again on 412; otherwise it is kept
        and returned. The first write inserts the record row, so it is one round trip; a rewrite, whose
        insert fails, pays a read and a second transaction. A record that notifies is read first, so
        that its notification goes into the outbox (before the record: sent at least once) only when
        the record will be written; the outcome of a reservation this ledger wrote is not read first:
        it is written on the ETag that write returned (another writer since: 412, read, as above)."""
        body = json.dumps(record.to_dict(), default=str)
        prefixes = _trail_prefixes(record)
        if len(body) * (1 + len(prefixes)) > _MAX_BATCH_CHARS:  # bounded records are far smaller: a bug
            raise PermanentError(f"record of {len(body)} characters is too large to write with its trail rows")
        with translated(f"writing decision {record.id}"):
            stored = self._written.pop(record.id, None)
            if stored is None and notification_of(record) is not None:
                stored = self._read_record(record.id)
            enqueued = False  # this call put the record's notification in the outbox
            for _ in range(attempts):
                if stored is None:
                    enqueued = self._enqueue(record) or enqueued
                    try:
                        done = self.decision_rows.submit_transaction(
                            self._decision_rows(record, body, record.at, prefixes, "create")
                        )
                    except TableTransactionError as exc:
                        if getattr(exc, "error_code", None) != "EntityAlreadyExists" or exc.index != 0:
                            raise
                    else:
                        self._remember(record, record.at, done)
                        return record
                    stored = self._read_record(record.id)
                    continue  # None: purged since the insert failed; insert again
                current, created, etag = stored
                if not may_replace(current, record):
                    if enqueued and notification_of(current) != notification_of(record):
                        self._dequeue(record)  # lost to another writer: no news of what was not recorded
                    return current
                enqueued = self._enqueue(record) or enqueued
                rows = self._decision_rows(record, body, created, prefixes, "update", etag)
                try:
                    done = self.decision_rows.submit_transaction(rows)
                except TableTransactionError as exc:
                    code = getattr(exc, "error_code", None)
                    if str(getattr(code, "value", code)) not in _CHANGED_MEANWHILE or exc.index != 0:
                        raise
                else:
                    self._remember(record, created, done)
                    return record
                stored = self._read_record(record.id)
        raise TransientError(f"decision {record.id}: {attempts} concurrent writers in a row; retry later")

    def _read_record(self, decision_id: str) -> tuple[DecisionRecord, str, str] | None:
        """The record stored under ``decision_id``, the time it was first written and its ETag, or None."""
        try:
            entity = self.decision_rows.get_entity(decision_partition(decision_id), record_key(decision_id))
        except ResourceNotFoundError:
            return None
        return DecisionRecord.from_dict(json.loads(_get_body(entity))), str(entity["created"]), _etag(entity)

    def _remember(self, record: DecisionRecord, created: str, results: Sequence[Mapping[str, Any]]) -> None:
        """Keep the ETag a transaction gave the record row, for a rewrite by this worker (a ``reserved``
        record's outcome) without a read; a final record is not rewritten, so it is not kept."""
        etag = results[0].get("etag") if results else None
        if record.outcome != "reserved" or not etag:
            return
        if len(self._written) >= _REMEMBERED:
            self._written.clear()
        self._written[record.id] = (record, created, str(etag))

    @staticmethod
    def _decision_rows(
        record: DecisionRecord, body: str, created: str, prefixes: list[str], first: str, etag: str | None = None
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """The operations that write ``record``: its record row (``first``: create, or an update
        conditional on ``etag``), then its trail rows (upserts: the same keys as any earlier write of
        the same decision)."""
        columns = {"PartitionKey": decision_partition(record.id), "model": record.model or ""}
        columns |= {"outcome": record.outcome, "at": record.at}
        columns |= {"created": created, "decision": record.id}
        replace: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        rk = trail_key(created, record.id)
        condition: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        ops = [
            (
                first,
                _put_body({**columns, "RowKey": record_key(record.id)}, body),
                replace | condition if first == "update" else {},
            )
        ]
        ops += [("upsert", _put_body({**columns, "RowKey": prefix + rk}, body), replace) for prefix in prefixes]
        return ops

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with translated(f"reading decision {decision_id}"):
            try:
                entity = self.decision_rows.get_entity(decision_partition(decision_id), record_key(decision_id))
            except ResourceNotFoundError:
                return None
        return DecisionRecord.from_dict(json.loads(_get_body(entity)))

    def decisions(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        event_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        """Newest first, from one trail (the event's, the model's, or all): a RowKey range in each
        shard, filtered by the columns each trail row carries, merged by RowKey (inverted time)."""
        lo, hi = _prefix_range(trail_prefix(event_id=event_id, model=model))
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        parameters: dict[str, Any] = {"lo": lo, "hi": hi}
        if model:  # the model's own trail, or a filter on the event's
            query, parameters["model"] = query + " and model eq @model", model
        if outcome:
            query, parameters["outcome"] = query + " and outcome eq @outcome", outcome
        if since is not None:
            query, parameters["since"] = query + " and created ge @since", iso(since)
        out: list[DecisionRecord] = []
        with translated("listing decisions"):
            shards = [
                self.decision_rows.query_entities(
                    query, parameters={**parameters, "pk": pk}, results_per_page=min(max(limit, 1), 1000)
                )
                for pk in DECISION_PARTITIONS
            ]
            for entity in heapq.merge(*shards, key=lambda e: str(e["RowKey"])):
                out.append(DecisionRecord.from_dict(json.loads(_get_body(entity))))
                if len(out) >= limit:
                    break
        return out

    def _enqueue(self, record: DecisionRecord) -> bool:
        """The record's notification into the outbox, unless it is there (pending or sent) already;
        whether this call put it there."""
        note = notification_of(record)
        if note is None:
            return False
        entity = {"PartitionKey": OUTBOX, "RowKey": safe_key(note.id), "created": note.time, "sent": ""}
        try:
            self.outbox.create_entity(_put_body(entity, json.dumps(note.to_dict(), default=str)))
        except ResourceExistsError:
            return False
        return True

    def _dequeue(self, record: DecisionRecord) -> None:
        """Take back the notification :meth:`_enqueue` put in the outbox for ``record``, if not sent yet."""
        note = notification_of(record)
        if note is None:
            return
        with contextlib.suppress(ResourceNotFoundError):
            entity = self.outbox.get_entity(OUTBOX, safe_key(note.id), select=["sent"])
            if not entity.get("sent"):
                self.outbox.delete_entity(
                    OUTBOX, safe_key(note.id), etag=_etag(entity), match_condition=MatchConditions.IfNotModified
                )

    # ------------------------------------------------------------------ outbox

    def pending_notifications(self, limit: int) -> list[Notification]:
        out: list[Notification] = []
        with translated("reading pending notifications"):
            pages = self.outbox.query_entities(
                "PartitionKey eq @pk and sent eq ''", parameters={"pk": OUTBOX}, results_per_page=max(1, limit)
            )
            for entity in pages:
                out.append(Notification.from_dict(json.loads(_get_body(entity))))
                if len(out) >= limit:
                    break
        return out

    def claim_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Each pending row due and unclaimed is claimed by an update conditional on the ETag read: of
        two senders that read it, one claims it (the other gets 412 and goes on to the next row)."""
        at, until = iso(now), iso(now + lease)
        out: list[OutboxEntry] = []
        if limit < 1:
            return out
        with translated("claiming notifications to send"):
            pending = self.outbox.query_entities(
                "PartitionKey eq @pk and sent eq ''", parameters={"pk": OUTBOX}, results_per_page=100
            )
            for entity in pending:
                if str(entity.get("due") or "") > at or str(entity.get("lease") or "") > at:
                    continue  # backing off, or claimed by another sender
                try:
                    self.outbox.update_entity(
                        {"PartitionKey": OUTBOX, "RowKey": entity["RowKey"], "lease": until},
                        mode=UpdateMode.MERGE,
                        etag=_etag(entity),
                        match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # another sender claimed (or sent) it since it was read
                out.append(_outbox_entry(entity))
                if len(out) >= limit:
                    break
        return out

    def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        with translated("marking notifications sent"):
            for note_id in ids:
                with contextlib.suppress(ResourceNotFoundError):
                    self.outbox.update_entity(
                        {"PartitionKey": OUTBOX, "RowKey": safe_key(note_id), "sent": iso(now), "lease": ""},
                        mode=UpdateMode.MERGE,
                    )

    def fail_notification(
        self, note_id: str, now: datetime, attempts: int, error: str, retry_at: datetime | None
    ) -> None:
        change: dict[str, Any] = {"PartitionKey": OUTBOX, "RowKey": safe_key(note_id), "attempts": attempts}
        change.update(error=error, lease="")
        if retry_at is None:
            change.update(sent=iso(now), dead=iso(now))
        else:
            change.update(due=iso(retry_at))
        with translated("recording a failed notification"):
            for _ in range(5):
                try:
                    entity = self.outbox.get_entity(OUTBOX, safe_key(note_id))
                    if entity.get("sent"):
                        return  # sent (or given up on) meanwhile: that stands
                    self.outbox.update_entity(
                        change, mode=UpdateMode.MERGE, etag=_etag(entity), match_condition=MatchConditions.IfNotModified
                    )
                except ResourceNotFoundError:
                    return  # purged
                except ResourceModifiedError:
                    continue  # changed since read: read it again
                return

    def notifications(self, dead: bool = False, limit: int = 50) -> list[OutboxEntry]:
        query = "PartitionKey eq @pk and " + ("dead gt ''" if dead else "sent eq ''")
        with translated("listing notifications"):
            entries = [_outbox_entry(e) for e in self.outbox.query_entities(query, parameters={"pk": OUTBOX})]
        entries.sort(key=lambda e: (e.notification.time, e.id), reverse=True)
        return entries[:limit]

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
            for pk in DECISION_PARTITIONS:
                rows = list(
                    self.decision_rows.query_entities(
                        "PartitionKey eq @pk and created lt @cutoff and outcome ne 'reserved'",
                        parameters={"pk": pk, "cutoff": cutoff},
                        select=["PartitionKey", "RowKey"],
                    )
                )
                n += sum(1 for row in rows if str(row["RowKey"]).startswith(_RECORD))
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
        for start in range(0, len(rows), _BATCH):
            batch = rows[start : start + _BATCH]
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
