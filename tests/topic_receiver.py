"""A local stand-in for an Event Grid custom topic with the CloudEvents 1.0 input schema: an HTTPS
server on 127.0.0.1 that the real ``EventGridPublisherClient`` posts to, recording what it accepts.

As the topic ``infra/modules/notifications.bicep`` creates does (Event Grid docs, "Post to custom
topic" and "Authenticate publishing clients using Microsoft Entra ID"): local auth is off, so a
publisher signs in with Entra ID (a bearer token for ``https://eventgrid.azure.net``) and needs the
``Microsoft.EventGrid/topics/events/send/action`` data action on the topic, which the receiver asks of
its :class:`tests.rbac_model.Principal` (by default the function app's identity, as ``infra/`` assigns its
roles); a key, a missing token or an identity without the role is 401 ("authorization failure", the
Event Grid client libraries' reference). With ``key=`` it is a topic with local auth on instead
(``aeg-sas-key``). A batch is a JSON array of CloudEvents posted with ``Content-Type:
application/cloudevents-batch+json``; a body that is not one is 400, success 200 with an empty body.
azure-core sends a bearer token over TLS only, so the server has a self-signed certificate that a test
trusts through ``REQUESTS_CA_BUNDLE`` (:meth:`TopicReceiver.trust`). ``outage(True)`` makes it answer 503 (the topic unavailable)
until ``outage(False)``, ``stall(seconds)`` makes it wait that long before answering (a topic that
does not answer in time); every request counts as an attempt either way. ``refuse(status, message)``
makes it refuse every batch with that 4xx and an Event Grid error body, ``poisoned`` holds event ids
a batch is refused for (400: the batch as a whole, as a topic does with one invalid event in it);
a body over 1 MB is 413, as Event Grid answers. ``posts`` keeps the event ids of every post, answered
as it was or not.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import rbac, rbac_model
from tests.fake_http import token_claims
from tests.hosts import serve_in_background

REQUIRED = ("id", "source", "type", "specversion")
SEND = "Microsoft.EventGrid/topics/events/send/action"
AUDIENCE = "https://eventgrid.azure.net"
# the environment these tests deploy: its notification topic, and the workspace beside it
WORLD = rbac.world("7a3c5f0e-1111-4d2b-9e8a-2b6f1c0d9e77", "rg-mlops", "ws-retrain")
TOPIC_ID = (
    f"/subscriptions/{WORLD.subscription}/resourceGroups/{WORLD.resource_group}/providers/Microsoft.EventGrid/topics/"
    + WORLD.names["Microsoft.EventGrid/topics"][0]
)


@cache
def _certificate() -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA), as PEM files: (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False), True
        )  # digitalSignature, keyCertSign
        .add_extension(ski, False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="topic-tls-"))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(folder / "cert.pem"), str(folder / "key.pem")


class TopicReceiver:
    __test__ = False

    def __init__(
        self, *, key: str | None = None, principal: rbac_model.Principal | None = None, topic_id: str = TOPIC_ID
    ) -> None:
        self.key = key
        self.principal = principal if principal is not None else rbac.principal(WORLD, rbac.APP_OID)
        self.topic_id = topic_id
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self.refused: list[int] = []
        self._down = False
        self._stall = 0.0
        self._refusal: tuple[int, str] | None = None
        self.poisoned: set[str] = set()
        self.posts: list[list[str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the topic: one TLS handshake per client, not per post
            disable_nagle_algorithm = True  # headers and body go in two writes: no delayed-ACK wait between

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.answer(self.path, dict(self.headers.items()), body)
                time.sleep(receiver.stalled())
                reply = receiver.error_body(status)
                self.send_response(status)
                if reply:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if key is None:  # Entra ID: over TLS only
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_certificate())
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = serve_in_background(self.server)

    @property
    def endpoint(self) -> str:
        scheme = "http" if self.key is not None else "https"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/api/events"

    def trust(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make ``requests`` (under azure-core) trust this receiver's certificate, for one test."""
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", _certificate()[0])

    def notifier(self, source: str = "") -> Any:
        """The app's notifier for this topic, signed in as the function app's identity."""
        from function_app.adapters.notifier import EventGridNotifier
        from tests.fake_http import FakeCredential

        if self.key is not None:
            from azure.core.credentials import AzureKeyCredential

            return EventGridNotifier.build(self.endpoint, source, AzureKeyCredential(self.key))
        return EventGridNotifier.build(self.endpoint, source, FakeCredential())

    def start(self) -> TopicReceiver:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def outage(self, down: bool) -> None:
        with self._lock:
            self._down = down

    def refuse(self, status: int | None, message: str = "The request is invalid") -> None:
        """Refuse every batch with ``status`` and ``message`` (None: stop refusing)."""
        with self._lock:
            self._refusal = None if status is None else (status, message)

    def error_body(self, status: int) -> bytes:
        """Event Grid's error answer (code and message), for a 4xx."""
        if not 400 <= status < 500:
            return b""
        with self._lock:
            message = self._refusal[1] if self._refusal and self._refusal[0] == status else f"HTTP {status}"
        if status == 400 and self.poisoned and not self._refusal:
            message = "An event in the batch is not valid"
        if status == 413:
            message = "The maximum size (1048576) has been exceeded"
        return json.dumps({"error": {"code": "BadRequest", "message": message}}).encode()

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
        try:
            posted = json.loads(body)
            self.posts.append([str(e.get("id")) for e in posted] if isinstance(posted, list) else [])
        except (ValueError, AttributeError):
            self.posts.append([])
        if self._down:
            return 503
        if len(body) > 1024 * 1024:
            return 413
        if self._refusal is not None:
            return self._refusal[0]
        if not path.startswith("/api/events") or not self._signed_in(headers):
            return 401
        if not headers.get("content-type", "").startswith("application/cloudevents-batch+json"):
            return 400
        try:
            batch = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(batch, list) or not all(isinstance(e, dict) and all(k in e for k in REQUIRED) for e in batch):
            return 400
        if any(e["id"] in self.poisoned for e in batch):
            return 400
        self.accepted.extend(batch)
        return 200

    def _signed_in(self, headers: dict[str, str]) -> bool:
        if self.key is not None:
            return headers.get("aeg-sas-key") == self.key
        claims = token_claims(headers.get("authorization"))
        return (
            claims.get("aud") == AUDIENCE
            and claims.get("oid") == self.principal.oid
            and self.principal.allows(SEND, self.topic_id, data=True)
        )
