"""The local development host as a newcomer runs it: a real process on 127.0.0.1, events posted
with the real EventGridPublisherClient, replies read over HTTP."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.azurite import free_port
from tests.builders import drift_event
from tests.conftest import load_sample, retrain_cli, sample_files
from tests.hosts import RunningHost, serve_in_background, serving, start_host

pytestmark = pytest.mark.slow


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RunningHost]:
    with serving({"RETRAIN_SQLITE_PATH": str(tmp_path / "ledger.db")}) as running:
        yield running


def test_every_published_sample_posted_to_the_webhook_gets_a_2xx(host: RunningHost) -> None:
    for path in sample_files():
        status, body = host.request("POST", "/api/events", json.loads(path.read_text()))
        assert 200 <= status < 300, (path.name, status, body)
        if "SubscriptionValidation" in path.name:
            assert body == load_sample("Microsoft.EventGrid.SubscriptionValidationEvent.response.json")


def test_drift_sample_plans_a_retrain_then_dedups_then_cools_down(host: RunningHost) -> None:
    drift = load_sample("Microsoft.MachineLearningServices.DatasetDriftDetected.eventgrid.json")
    client = host.publisher()
    client.send(drift)
    _, trail = host.request("GET", "/api/decisions")
    [planned] = trail["decisions"]
    assert (planned["action"], planned["outcome"], planned["model"]) == (
        "retrain",
        "planned",
        "sklearn_regression_model",
    )
    assert planned["job"]["name"].startswith("retrain-sklearn-regression-model-")

    client.send(drift)  # the same event again: a duplicate, nothing new planned
    _, trail = host.request("GET", "/api/decisions")
    assert [d["id"] for d in trail["decisions"]] == [planned["id"]]

    client.send([{**drift[0], "id": "a-new-event-id"}])  # a new event inside the cooldown
    _, trail = host.request("GET", "/api/decisions")
    newest = trail["decisions"][0]
    assert newest["outcome"] == "skipped" and "cooldown" in newest["reason"]
    assert newest["trigger"]["event_id"] == "a-new-event-id"


def test_cli_send_posts_with_the_publisher_client(host: RunningHost) -> None:
    sample = next(p for p in sample_files() if "DatasetDriftDetected" in p.name)
    out = retrain_cli("send", str(sample), "--url", host.url, "--new-id", check=True)
    assert out.stdout.startswith("sent 1 event(s)")
    _, trail = host.request("GET", "/api/decisions")
    assert trail["decisions"][0]["outcome"] == "planned"


def test_runtime_webhook_route_answers_the_validation_handshake(host: RunningHost) -> None:
    sample = load_sample("Microsoft.EventGrid.SubscriptionValidationEvent.eventgrid.json")
    status, body = host.request(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=on_workspace_event",
        sample,
        {"aeg-event-type": "SubscriptionValidation"},
    )
    assert (status, body) == (200, load_sample("Microsoft.EventGrid.SubscriptionValidationEvent.response.json"))


def test_invalid_policy_stops_start_up_naming_file_key_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("models:\n  churn:\n    retrain:\n      pipeline: train\n")
    port = free_port()
    proc = start_host({"RETRAIN_POLICY_PATH": str(bad), "RETRAIN_SQLITE_PATH": str(tmp_path / "l.db")}, port)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert (
        f"{bad}: models.churn.retrain.pipeline: component 'train' has no version; write 'train:3' or 'train@latest'"
        in err
    )


def test_invalid_settings_stop_start_up_with_the_fix(tmp_path: Path) -> None:
    proc = start_host({"RETRAIN_LEDGER": "postgres"}, free_port())
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "RETRAIN_LEDGER='postgres': use 'sqlite' or 'table'" in err


def test_cli_send_key_reaches_a_functions_host_as_x_functions_key(tmp_path: Path) -> None:
    """A Functions host reads the function key from x-functions-key (or ?code=), not aeg-sas-key."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    serve_in_background(server).start()
    try:
        sample = next(p for p in sample_files() if "DatasetDriftDetected" in p.name)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        retrain_cli("send", str(sample), "--url", url, "--key", "k-123", check=True)
    finally:
        server.shutdown()
        server.server_close()
    [headers] = seen
    assert headers["x-functions-key"] == "k-123"
    assert headers.get("aeg-sas-key") != "k-123"  # the key is not handed to the topic header


def test_128_clients_at_once_are_all_answered(host: RunningHost) -> None:
    """A burst of parallel deliveries (Event Grid sends in parallel) is queued, not stalled or reset."""
    clients = 128
    barrier = threading.Barrier(clients)
    answers: list[object] = []

    def one() -> None:
        barrier.wait()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=20)
            conn.request("GET", "/api/health")
            reply = conn.getresponse()
            reply.read()
            conn.close()
            answers.append(reply.status)
        except OSError as exc:
            answers.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * clients, [a for a in answers if a != 200][:5]


@pytest.mark.parametrize("method", ["OPTIONS", "GET", "PUT", "DELETE"])
def test_only_post_on_the_event_grid_trigger_path_is_a_delivery(host: RunningHost, method: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    conn.request(method, "/runtime/webhooks/eventgrid?functionName=on_workspace_event", body=b"[]")
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert (reply.status, reply.getheader("Allow")) == (405, "POST") and "delivers with POST" in body["error"]
    assert host.request("GET", "/api/decisions")[1] == {"decisions": []}


def test_a_ledger_disk_that_is_full_answers_503_with_retry_after_and_the_redelivery_finds_what_was_done(
    tmp_path: Path,
) -> None:
    """SQLite refusing to grow its file (disk full, an I/O error on COMMIT) is transient: Event Grid is
    told to retry (503, Retry-After), never a 500; once there is room the redelivery is handled once."""
    env = {"RETRAIN_SQLITE_PATH": str(tmp_path / "ledger.db")}
    refused: dict[str, object] = {}
    with serving(env, max_file_bytes=100_000) as full:
        for i in range(200):
            batch = [drift_event(event_id=f"full-{i}", monitor=f"monitor-{i}")]
            conn = http.client.HTTPConnection("127.0.0.1", full.port, timeout=10)
            conn.request("POST", "/api/events", json.dumps(batch), {"aeg-event-type": "Notification"})
            reply = conn.getresponse()
            body = json.loads(reply.read())
            conn.close()
            if reply.status != 200:
                refused = {
                    "status": reply.status,
                    "retry_after": reply.getheader("Retry-After"),
                    "body": body,
                    "batch": batch,
                }
                break
    assert refused, "the ledger never filled up"
    assert refused["status"] == 503 and refused["retry_after"], refused
    [result] = refused["body"]["results"]  # type: ignore[index]
    assert result["status"] == "retry" and "cannot be written now" in result["error"]
    event_id = result["event_id"]

    with serving(env) as roomy:  # space again: the redelivery of the refused event
        status, body = roomy.request("POST", "/api/events", refused["batch"], {"aeg-event-type": "Notification"})
        assert status == 200 and body["results"][0]["status"] in ("processed", "duplicate")
        _, trail = roomy.request("GET", f"/api/decisions?event_id={event_id}")
        assert len(trail["decisions"]) == 1


@pytest.mark.parametrize("seconds", ["30", "45"])
def test_a_deadline_event_grid_would_not_wait_for_stops_start_up(seconds: str) -> None:
    proc = start_host({"RETRAIN_DEADLINE_SECONDS": seconds}, free_port())
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a host that started anyway is not left running
    assert proc.returncode == 2 and f"RETRAIN_DEADLINE_SECONDS='{seconds}': must be under 30" in err
