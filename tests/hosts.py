"""The local development host as a real process on 127.0.0.1 (what `make run` starts), for the
tests that use it as a newcomer would: over HTTP, from the command line, from a browser."""

from __future__ import annotations

import http.client
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import BaseServer
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridPublisherClient

from tests.azurite import free_port
from tests.conftest import REPO

# How often a server of a test looks for `shutdown()`: serve_forever's default, 0.5 s, was what most of
# the notification tests' teardowns and the console tests' servers spent (the suite's durations, 2026-12-07)
SHUTDOWN_POLL = 0.01


def serve_in_background(server: BaseServer) -> threading.Thread:
    """A daemon thread (not yet started) serving ``server`` until ``server.shutdown()``, which then
    returns within SHUTDOWN_POLL."""
    return threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, daemon=True)


class RunningHost:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        raw = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=raw, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data) if data else None

    def publisher(self) -> EventGridPublisherClient:
        return EventGridPublisherClient(f"{self.url}/api/events", AzureKeyCredential("local"))


def start_host(env: dict[str, str], port: int, max_file_bytes: int | None = None) -> subprocess.Popen[str]:
    """``max_file_bytes``: no file the host writes may grow past it (RLIMIT_FSIZE): a full disk."""

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "function_app.cli", "host", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit if max_file_bytes is not None else None,  # noqa: PLW1509 (only setrlimit, before exec)
    )


@contextmanager
def serving(env: dict[str, str], max_file_bytes: int | None = None) -> Iterator[RunningHost]:
    """`retrain host` on a free port with ``env``, once it answers /api/health; stopped after."""
    port = free_port()
    proc = start_host({**env, "PORT": str(port)}, port, max_file_bytes)
    running = RunningHost(port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if running.request("GET", "/api/health")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"host did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    try:
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def hosting(world: Any) -> Iterator[str]:
    """The app in this process on a free port, serving ``world``; its URL."""
    import main
    from function_app import runtime
    from function_app.localhost import Host, make_server

    runtime.set_retrainer(world.worker)
    server = make_server(Host(main.app), free_port())
    serve_in_background(server).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        runtime.set_retrainer(None)
