"""The Table ledger's entities: table names, partition and row keys, bodies over several properties,
and the clients' options. What the ledger's parts (events, models, decisions, outbox) share; the
layout is described in function_app/adapters/table_ledger.py and docs/ledger.md."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient

from handlers.errors import PermanentError
from handlers.keys import digest
from handlers.records import DecisionRecord, cut, from_iso, refused

TABLES = ("events", "models", "decisions", "outbox")
DECISIONS = "d"  # the decisions table's partitions: d0..d7, a record and its trail rows in its id's shard
_SHARDS = 8  # fixed for good: a decision's partition is found from its id alone (changing it moves records)
RECORD = "r:"  # the RowKey prefix of a decision's record row (trail rows start a:, e:, m:)
OUTBOX = "outbox"  # the old layout's outbox partition (drained until empty)
STATE = "state"  # the RowKey of a model's state row, in its partition of the decisions table
NOTE = "o:"  # the RowKey prefix of a notification's outbox row, in its decision's partition
NO_MODEL = "-"  # the partition of the decisions that concern no model (model partitions start m:)
_CHUNK = 30_000  # characters per string property (the limit is 64 KiB of UTF-16)
_MAX_CHUNKS = 30  # an entity holds at most 1 MiB
_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f%]")
_EPOCH_MS_MAX = 10**13
BATCH = 100  # operations in one entity group transaction
REMEMBERED = 256  # reserved records whose ETag a worker keeps for their outcome's write
# A transaction's conditional update that lost to another writer (412), or found the row gone (purged).
CHANGED_MEANWHILE = frozenset({"UpdateConditionNotSatisfied", "ConditionNotMet", "ResourceNotFound"})
MAX_BATCH_CHARS = 3_500_000  # a transaction's payload is at most 4 MiB; bodies are ASCII JSON
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


def model_partition(model: str | None) -> str:
    """The partition of the decisions table that holds a model's state row, its decisions, their
    trail rows and notifications (``-`` for the decisions that concern no model): what must change
    together is one entity group transaction."""
    return f"m:{model_key(model)}" if model else NO_MODEL


def home_partition(record: DecisionRecord, stored: str | None, notifies: bool) -> str:
    """Where ``record`` is written: where it is stored already unless that is its shard; a guard's
    refusal that notifies nobody (most records of a storm) in its id's shard, with its trail rows of
    all, of its event and of its model; anything else in its model's partition (``-`` for none), so
    that a model's partition, which each delivery reads and writes, holds only what its slot and its
    notifications need. A refusal gives way to a reservation (``handlers.records.may_replace``), which
    moves the decision to its model's partition."""
    if stored is not None and stored not in DECISION_PARTITIONS:
        return stored
    if refused(record) and not notifies:
        return decision_partition(record.id)
    return model_partition(record.model)


def model_key(model: str) -> str:
    """A model's name as a key (its directory row's PartitionKey): escaped, and a long one cut with
    its digest (a key holds at most 1 KiB)."""
    key = safe_key(model)
    return key if len(key) <= 400 else f"{key[:300]}~{digest('model', model, length=32)}"


def note_key(note_id: str) -> str:
    """The RowKey of a notification's outbox row in its decision's partition."""
    return f"{NOTE}{safe_key(note_id)}"


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
    return f"{RECORD}{safe_key(decision_id)}"


def trail_prefix(*, event_id: str | None = None, model: str | None = None) -> str:
    """The RowKey prefix of one trail: a decision's event's (any source or model), its model's, or
    all. Event ids and model names are digested: a fixed length, so one prefix is never the start of
    another, and within the 1 KiB a key may hold whatever their length."""
    if event_id is not None:  # as the record keeps it: an id over MAX_TEXT is cut, with its digest
        return f"e:{digest('event', cut(event_id), length=32)}:"
    if model:
        return f"m:{digest('model', model, length=32)}:"
    return "a:"


def prefix_range(prefix: str) -> tuple[str, str]:
    """``RowKey ge lo and RowKey lt hi`` selects exactly the keys that start with ``prefix``."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def trail_prefixes(record: DecisionRecord) -> list[str]:
    """Each decision is in the trail of all, of its event and of its model (if it concerns one)."""
    prefixes = [trail_prefix(), trail_prefix(event_id=str(record.trigger.get("event_id") or ""))]
    if record.model:
        prefixes.append(trail_prefix(model=record.model))
    return prefixes


def put_body(entity: dict[str, Any], body: str) -> dict[str, Any]:
    chunks = [body[i : i + _CHUNK] for i in range(0, len(body), _CHUNK)] or [""]
    if len(chunks) > _MAX_CHUNKS:  # records are bounded inside (DecisionRecord.bounded): a bug if it happens
        raise PermanentError(
            f"record of {len(body)} characters is too large for one table entity ({_MAX_CHUNKS * _CHUNK} at most)"
        )
    entity["body"] = chunks[0]
    for n, chunk in enumerate(chunks[1:], start=1):
        entity[f"body{n}"] = chunk
    return entity


def get_body(entity: dict[str, Any]) -> str:
    parts = [str(entity.get("body") or "")]
    n = 1
    while f"body{n}" in entity:
        parts.append(str(entity[f"body{n}"]))
        n += 1
    return "".join(parts)


class Stored(NamedTuple):
    """A record as stored: the time it was first written (its trail rows' key), its row's ETag and
    its partition (its model's, ``-``, or a shard ``d0`` .. ``d7``)."""

    record: DecisionRecord
    created: str
    etag: str
    partition: str


def etag_of(entity: Any) -> str:
    return str(entity.metadata["etag"])


class TableParts:
    """What the ledger's parts share: the four tables' clients and what a worker remembers of the rows
    it wrote (set up by :class:`function_app.adapters.table_ledger.TableLedger`)."""

    events: TableClient
    models: TableClient
    decision_rows: TableClient
    outbox: TableClient
    sleep: Callable[[float], None]
    rng: random.Random
    # The record rows this ledger wrote last, by decision id.
    _written: dict[str, Stored]
    # Each model's row as this worker last read or wrote it: (body, ETag).
    _rows: dict[str, tuple[str, str]]
    # The outbox rows this worker inserted and has not claimed yet, by notification id: (entity, ETag).
    _own: dict[str, tuple[dict[str, Any], str]]
    # The models this worker knows the directory lists, and those it knows this layout created (their
    # directory row has no body: no record of theirs is in the shards of the layout before).
    _listed: set[str]
    _native: set[str]
    # The pending outbox rows a reconciler's list_models found in each partition, and when (monotonic).
    _survey: tuple[float, dict[str, list[Any]]] | None
    # The partition of each notification this worker saw, and of each decision.
    _notes: dict[str, str]
    _where: dict[str, str]
    # Records this worker read, by id, as stored: a rewrite by it is conditional on the ETag read.
    _seen: dict[str, Stored]
    # The claims this worker inserted first (an event never claimed before), by claim key: the
    # times until which no other instance can have taken the claim over (half its lease), on this
    # worker's monotonic clock and on its wall clock: fresh only while both say so.
    _fresh: dict[str, tuple[float, float]]
    # This worker's own clocks (seconds; time.monotonic, time.time), on which ``_fresh`` is told.
    monotonic: Callable[[], float]
    wall: Callable[[], float]
    # How long a notification this worker writes is claimed by it as written (None: not claimed).
    _send_lease: timedelta | None
