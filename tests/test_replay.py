"""Replaying dead-lettered events: parsed from the published dead-letter format, run through the
service, blobs marked only when every event was handled."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from handlers.errors import TransientError
from handlers.replay import parse_dead_letters, replay
from tests.builders import drift_event
from tests.conftest import load_sample
from tests.test_service import World


@dataclass
class MemoryStore:
    blobs: dict[str, bytes]
    marked: dict[str, str] = field(default_factory=dict)

    def pending(self) -> Iterable[str]:
        return sorted(n for n in self.blobs if n not in self.marked)

    def read(self, name: str) -> bytes:
        return self.blobs[name]

    def mark_replayed(self, name: str, summary: str) -> None:
        self.marked[name] = summary


def dead_letter(event: dict[str, object], reason: str = "MaxDeliveryAttemptsExceeded") -> dict[str, object]:
    return {
        **event,
        "deadLetterReason": reason,
        "deliveryAttempts": 30,
        "lastDeliveryOutcome": "InternalServerError",
        "publishTime": "2026-11-25T10:00:00Z",
        "lastDeliveryAttemptTime": "2026-11-26T10:00:00Z",
    }


def test_published_dead_letter_record_yields_the_original_event() -> None:
    raw = load_sample("DeadLetter.Microsoft.Storage.BlobCreated.eventgrid.json")
    [item] = parse_dead_letters("SUB/2020/8/13/17/x.json", json.dumps(raw).encode())
    assert item.envelope is not None and item.envelope.event_type == "Microsoft.Storage.BlobCreated"
    assert (item.reason, item.attempts, item.last_outcome) == ("MaxDeliveryAttemptsExceeded", 1, "NotFound")
    assert "deadLetterReason" not in item.envelope.data


def test_replay_runs_each_event_through_the_service_and_marks_the_blob(tmp_path: Path) -> None:
    world = World(tmp_path / "l.db")
    store = MemoryStore(
        {"SUB/2026/11/26/10/a.json": json.dumps([dead_letter(drift_event(event_id="lost-1"))]).encode()}
    )
    [report] = replay(world.service, store)
    assert (report.outcome, report.event_id) == ("replayed", "lost-1")
    assert "retrain submitted" in report.detail and len(world.actions.submissions) == 1
    assert store.marked == {"SUB/2026/11/26/10/a.json": "replayed"}
    assert replay(world.service, store) == []  # marked blobs are not replayed again


def test_replaying_an_event_that_was_processed_after_all_is_a_duplicate(tmp_path: Path) -> None:
    world = World(tmp_path / "l.db")
    event = drift_event(event_id="e-1")
    world.deliver(event)
    store = MemoryStore({"b.json": json.dumps([dead_letter(event)]).encode()})
    [report] = replay(world.service, store)
    assert report.outcome == "duplicate" and len(world.actions.submissions) == 1


def test_transient_failure_leaves_the_blob_for_another_replay(tmp_path: Path) -> None:
    world = World(tmp_path / "l.db")
    world.actions.fail_with = TransientError("503")
    store = MemoryStore({"b.json": json.dumps([dead_letter(drift_event(event_id="e-1"))]).encode()})
    [report] = replay(world.service, store)
    assert report.outcome == "transient" and store.marked == {}
    world.actions.fail_with = None
    world.clock.advance(minutes=5)
    [again] = replay(world.service, store)
    assert again.outcome == "replayed" and store.marked


@pytest.mark.parametrize("content", [b"not json", b"[1]", json.dumps([{"eventType": "x"}]).encode()])
def test_unreadable_dead_letters_are_reported_not_dropped(tmp_path: Path, content: bytes) -> None:
    world = World(tmp_path / "l.db")
    store = MemoryStore({"b.json": content})
    [report] = replay(world.service, store)
    assert report.outcome == "failed" and report.detail and store.marked == {}


def test_dry_run_lists_and_changes_nothing(tmp_path: Path) -> None:
    world = World(tmp_path / "l.db")
    store = MemoryStore({"b.json": json.dumps([dead_letter(drift_event(event_id="e-1"))]).encode()})
    [report] = replay(world.service, store, dry_run=True)
    assert report.outcome == "would replay" and "30 attempt(s)" in report.detail
    assert store.marked == {} and world.actions.submissions == [] and world.ledger.decisions() == []
