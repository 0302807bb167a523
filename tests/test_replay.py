"""Replaying dead-lettered events: parsed from the published dead-letter format, run through the
service, blobs marked only when every event was handled."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from handlers.errors import InvalidInput, TransientError
from handlers.replay import parse_dead_letters, replay
from tests.azurite import Azurite
from tests.builders import ML, WORKSPACE, drift_event
from tests.conftest import TEST_JOB_NAME_KEY, load_sample, table_prefix
from tests.ledgers import LedgerSpec
from tests.world import World


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
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")))
    store = MemoryStore(
        {"SUB/2026/11/26/10/a.json": json.dumps([dead_letter(drift_event(event_id="lost-1"))]).encode()}
    )
    [report] = replay(world.service, store)
    assert (report.outcome, report.event_id) == ("replayed", "lost-1")
    assert "retrain submitted" in report.detail and len(world.actions.submissions) == 1
    assert store.marked == {"SUB/2026/11/26/10/a.json": "replayed"}
    assert replay(world.service, store) == []  # marked blobs are not replayed again


def test_replaying_an_event_that_was_processed_after_all_is_a_duplicate(tmp_path: Path) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")))
    event = drift_event(event_id="e-1")
    world.deliver(event)
    store = MemoryStore({"b.json": json.dumps([dead_letter(event)]).encode()})
    [report] = replay(world.service, store)
    assert report.outcome == "duplicate" and len(world.actions.submissions) == 1


def test_transient_failure_leaves_the_blob_for_another_replay(tmp_path: Path) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")))
    world.actions.fail_with = TransientError("503")
    store = MemoryStore({"b.json": json.dumps([dead_letter(drift_event(event_id="e-1"))]).encode()})
    [report] = replay(world.service, store)
    assert report.outcome == "transient" and store.marked == {}
    world.actions.fail_with = None
    world.clock.advance(minutes=5)
    [again] = replay(world.service, store)
    assert again.outcome == "replayed" and store.marked


@pytest.mark.parametrize("content", [b"not json", b"[1]", json.dumps([{"eventType": "x"}]).encode()])
def test_unreadable_dead_letters_are_reported_and_marked_with_why(tmp_path: Path, content: bytes) -> None:
    """Reported once, and marked so the next replay does not trip on it again; the blob stays for a person."""
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")))
    store = MemoryStore({"b.json": content})
    [report] = replay(world.service, store)
    assert report.outcome == "unreadable" and report.detail
    assert store.marked["b.json"].startswith("replayed; 1 unreadable: ")
    assert replay(world.service, store) == []


def test_dry_run_lists_and_changes_nothing(tmp_path: Path) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")))
    store = MemoryStore({"b.json": json.dumps([dead_letter(drift_event(event_id="e-1"))]).encode()})
    [report] = replay(world.service, store, dry_run=True)
    assert report.outcome == "would replay" and "30 attempt(s)" in report.detail
    assert store.marked == {} and world.actions.submissions == [] and world.ledger.decisions() == []


def replay_settings(monkeypatch: pytest.MonkeyPatch, azurite: Azurite, container: str) -> str:
    """The app settings `retrain replay` reads in Azure: dead letters in ``container``, the Table ledger
    under a fresh prefix (returned), both on Azurite."""
    ledger = LedgerSpec("table", azurite.connection_string, table_prefix())
    for key, value in {
        "RETRAIN_BLOB_CONNECTION": azurite.connection_string,
        "RETRAIN_DEADLETTER_CONTAINER": container,
        "RETRAIN_JOB_NAME_KEY": TEST_JOB_NAME_KEY,
        **ledger.settings(),
    }.items():
        monkeypatch.setenv(key, value)
    return ledger.prefix


def test_retrain_replay_reads_and_marks_real_blobs_and_decides_on_the_table_ledger(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command as an operator runs it, on Azurite: dead letters in a blob container, the ledger
    in Azure Tables, both chosen by settings."""
    from azure.storage.blob import ContainerClient

    from function_app.cli import main
    from handlers.signals import Trigger

    container = "deadletter" + uuid.uuid4().hex[:8]
    blobs = ContainerClient.from_connection_string(azurite.connection_string, container)
    blobs.create_container()
    name = "SUB/2026/11/26/10/lost.json"
    blobs.upload_blob(name, json.dumps([dead_letter(drift_event(event_id="lost-in-blob"))]).encode())
    blobs.upload_blob("SUB/2026/11/26/10/README.txt", b"not a dead letter")  # ignored: not .json
    prefix = replay_settings(monkeypatch, azurite, container)

    assert main(["replay"]) == 0
    out = capsys.readouterr().out
    assert "replayed" in out and "lost-in-blob" in out
    metadata = blobs.get_blob_client(name).get_blob_properties().metadata
    assert metadata["retrain_replayed"] and metadata["retrain_outcome"] == "replayed"

    ledger = LedgerSpec("table", azurite.connection_string, prefix).open()
    status = ledger.event_status(Trigger(WORKSPACE, "lost-in-blob", ML + "DatasetDriftDetected"))
    assert status is not None and status[0] == "done"
    [decision] = ledger.decisions()
    assert (decision.id, decision.outcome) == (status[1][0], "planned")  # the dry-run backend

    assert main(["replay"]) == 0  # a replayed blob is not replayed again
    assert "no dead-lettered events waiting" in capsys.readouterr().out


def test_retrain_replay_dry_run_writes_nothing_to_the_table_ledger(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retrain replay --dry-run` lists what it would replay and writes nothing: not even the directory rows
    a worker that serves writes as it starts (its policy's models, handlers.wiring.start)."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import ContainerClient

    from function_app.cli import main

    container = "deadletter" + uuid.uuid4().hex[:8]
    blobs = ContainerClient.from_connection_string(azurite.connection_string, container)
    blobs.create_container()
    blobs.upload_blob("SUB/2026/11/26/10/lost.json", json.dumps([dead_letter(drift_event(event_id="e-1"))]).encode())
    prefix = replay_settings(monkeypatch, azurite, container)
    LedgerSpec("table", azurite.connection_string, prefix).open()  # the ledger's tables, as a deployment has them

    assert main(["replay", "--dry-run"]) == 0

    assert "would replay" in capsys.readouterr().out
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    assert list(tables.get_table_client(prefix + "models").list_entities()) == []


def test_one_unreadable_blob_is_reported_and_skipped_and_the_others_are_replayed(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retrain replay` on Azurite: a blob too large to be a dead letter is refused without being
    downloaded, one that is not JSON is reported; neither stops the good blobs, and neither makes the
    next replay fail again."""
    from azure.storage.blob import ContainerClient

    from function_app.adapters.blob_deadletters import BlobDeadLetterStore
    from function_app.cli import main

    container = "deadletter" + uuid.uuid4().hex[:8]
    blobs = ContainerClient.from_connection_string(azurite.connection_string, container)
    blobs.create_container()
    blobs.upload_blob("SUB/a-huge.json", b"[" + b" " * (5 * 1024 * 1024) + b"]")
    blobs.upload_blob("SUB/b-garbled.json", b"\x00not json")
    blobs.upload_blob("SUB/c-good.json", json.dumps([dead_letter(drift_event(event_id="good-one"))]).encode())
    replay_settings(monkeypatch, azurite, container)

    sent: list[tuple[str, str]] = []  # what the SDK sends for the huge blob: its properties only
    watched = ContainerClient.from_connection_string(
        azurite.connection_string,
        container,
        raw_request_hook=lambda r: sent.append((r.http_request.method, r.http_request.url)),
    )
    with pytest.raises(InvalidInput, match="larger than 4194304 bytes"):
        BlobDeadLetterStore(watched).read("SUB/a-huge.json")
    assert [method for method, url in sent if "a-huge" in url] == ["HEAD"]

    assert main(["replay"]) == 1  # the unreadable ones are reported: someone should look at them
    out = capsys.readouterr().out
    assert "unreadable" in out and "larger than 4194304 bytes" in out and "not valid JSON" in out
    assert "replayed      Microsoft.MachineLearningServices.DatasetDriftDetected  good-one" in out
    huge = blobs.get_blob_client("SUB/a-huge.json").get_blob_properties().metadata
    assert huge["retrain_outcome"].startswith("unreadable: blob of 5242882 bytes")

    assert main(["replay"]) == 0  # marked with why: the next replay does not trip on them again
    assert "no dead-lettered events waiting" in capsys.readouterr().out
