"""A local stand-in for an Event Grid custom topic with the CloudEvents 1.0 input schema: an HTTP
server on 127.0.0.1 that the real ``EventGridPublisherClient`` posts to, recording what it accepts.

As the topic does (Event Grid docs, "Post to custom topic"): a batch is a JSON array of CloudEvents
posted with ``Content-Type: application/cloudevents-batch+json``, authenticated by the
``aeg-sas-key`` header; a wrong or missing key is 401, a body that is not a batch of CloudEvents 400,
and success 200 with an empty body. ``outage(True)`` makes it answer 503 (the topic unavailable)
until ``outage(False)``, ``stall(seconds)`` makes it wait that long before answering (a topic that
does not answer in time); every request counts as an attempt either way.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REQUIRED = ("id", "source", "type", "specversion")


class TopicReceiver:
    __test__ = False

    def __init__(self, key: str = "local-topic-key") -> None:
        self.key = key
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self.refused: list[int] = []
        self._down = False
        self._stall = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.answer(self.path, dict(self.headers.items()), body)
                time.sleep(receiver.stalled())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/events"

    def start(self) -> TopicReceiver:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def outage(self, down: bool) -> None:
        with self._lock:
            self._down = down

    def stall(self, seconds: float) -> None:
        with self._lock:
            self._stall = seconds

    def stalled(self) -> float:
        with self._lock:
            return self._stall

    def ids(self) -> list[str]:
        with self._lock:
            return [str(e["id"]) for e in self.accepted]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        lowered = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.attempts += 1
            status = self._judge(path, lowered, body)
            if status != 200:
                self.refused.append(status)
            return status

    def _judge(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if self._down:
            return 503
        if not path.startswith("/api/events") or headers.get("aeg-sas-key") != self.key:
            return 401
        if not headers.get("content-type", "").startswith("application/cloudevents-batch+json"):
            return 400
        try:
            batch = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(batch, list) or not all(isinstance(e, dict) and all(k in e for k in REQUIRED) for e in batch):
            return 400
        self.accepted.extend(batch)
        return 200
