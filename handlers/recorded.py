"""What the ledger keeps of each event for a replay (``retrain backtest``, :mod:`handlers.backtest`):
the signal it became, as JSON, written with its claim, beside the time it arrived (the claim's
``received_at``, the clock the service decided it at).

A signal is a frozen dataclass of :mod:`handlers.signals`; :func:`encode` writes its fields (its
trigger, mappings and tuples as JSON objects and arrays) under its type's name, :func:`decode` reads
them back into the same dataclass. A signal too large to keep within a ledger's string property
(:data:`MAX_SIGNAL`) is not kept: its event stays in the trail, and a replay says it cannot replay it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers import signals
from handlers.signals import Signal, Trigger

# Characters of a signal's JSON that every ledger keeps (an Azure Table string property holds 64 KiB,
# 32,768 UTF-16 characters); a larger signal is not kept.
MAX_SIGNAL = 30_000

_TYPES: dict[str, type[Any]] = {t.__name__: t for t in typing.get_args(Signal)}


def encode(signal: Signal) -> str | None:
    """``signal`` as the ledger keeps it (JSON, in field order), or None when it is over :data:`MAX_SIGNAL`."""
    fields = {}
    for f in dataclasses.fields(signal):
        value = getattr(signal, f.name)
        fields[f.name] = value.as_dict() if isinstance(value, Trigger) else value
    text = json.dumps({"type": type(signal).__name__, "fields": fields}, default=_plain)
    return text if len(text) <= MAX_SIGNAL else None


def _plain(value: Any) -> Any:
    if isinstance(value, signals.RunSeen):  # an upstream run as the workspace reported it
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def decode(text: str) -> Signal:
    """The signal :func:`encode` wrote; ValueError saying what is wrong when ``text`` is not one (a
    signal type this version does not know, a field it does not have)."""
    raw = json.loads(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("fields"), dict):
        raise ValueError("not a recorded signal (an object with 'type' and 'fields')")  # noqa: TRY004 (one error for any bad record)
    cls = _TYPES.get(str(raw.get("type")))
    if cls is None:
        raise ValueError(f"signal type {raw.get('type')!r} is not one this version knows")
    hints = typing.get_type_hints(cls, vars(signals))
    values: dict[str, Any] = {}
    for name, value in raw["fields"].items():
        hint = hints.get(name)
        if hint is None:
            raise ValueError(f"signal type {cls.__name__} has no field {name!r}")
        values[name] = _typed(hint, value)
    return typing.cast("Signal", cls(**values))


def _typed(hint: Any, value: Any) -> Any:
    if hint is Trigger:
        return Trigger.from_dict(value)
    if isinstance(value, dict) and signals.RunSeen in typing.get_args(hint):
        return signals.RunSeen(**value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


@dataclass(frozen=True)
class RecordedEvent:
    """One claimed event as the ledger keeps it: its trigger's ``source``, ``event_id`` and
    ``event_type``, when it arrived (``received_at``, ISO), its ``status`` (processing or done), the
    ids of the decisions that answered it, and its ``signal`` (:func:`encode`; None when it was not
    kept: recorded before the ledger kept signals, too large, or not a signal, such as an operator's
    request)."""

    source: str
    event_id: str
    event_type: str
    received_at: str
    status: str
    decisions: tuple[str, ...]
    signal: str | None
