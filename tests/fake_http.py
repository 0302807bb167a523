"""The plumbing every in-process Azure fake shares: a new fake is a handler.

A fake service subclasses :class:`FakeService` and answers in ``handle(request)`` (and, where the
service checks the caller before anything can fail, in ``check(request)``): it gets the request
already read (:class:`Request`: host, path, query, headers, JSON body), returns ``(status, headers,
body)``, or raises :class:`Refusal` (an error answer in Azure's ``{"error": {"code", "message"}}``
shape) or :class:`Unexpected` (a request the fake does not know: 400, recorded in ``unexpected``,
which the tests assert empty). Everything else is here, once:

- the transport: the fake *is* the azure-core transport the real SDK client is given
  (``transport=``), a :class:`RequestsTransport` whose ``requests`` session has no network adapter,
  only one that answers from the fake with a ``requests.Response`` wrapping a ``urllib3.HTTPResponse``:
  the same object the real transport reads, for both azure-core request types; no proxy from the
  environment, nothing leaves the process;
- scripted faults (:meth:`FakeService.fail`): the next matching requests answered with a status, or
  raising what ``requests`` raises on a timeout or a refused connection, so azure-core maps it to its
  own exceptions exactly as in production;
- azure-core's waits (``sleep``: retry backoff, polling): never slept in real time;
- the tokens: :class:`FakeCredential` hands out unsigned JWTs for the requested audience, as the
  function app's managed identity or another identity; :func:`token_claims` reads one back.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse

from tests import rbac

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (None: no body; bytes: sent as they are)

# --------------------------------------------------------------------------- tokens

# The function app's user-assigned managed identity as its tokens name it: ``appid`` (v1) and ``azp``
# (v2) are its client id, ``oid`` its object id, ``xms_mirid`` its resource id; ``idtyp`` "app".
APP_CLIENT_ID = "00000000-0000-0000-0000-0000000000ac"
APP_IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-0000000000cc/resourceGroups/rg-retrain-dev/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-retrain-dev"
)
APP_CLAIMS: dict[str, Any] = {
    "oid": rbac.APP_OID,
    "appid": APP_CLIENT_ID,
    "azp": APP_CLIENT_ID,
    "idtyp": "app",
    "xms_mirid": APP_IDENTITY,
}
# A person with a workspace account (AzureML Data Scientist), signed in with the Azure CLI: a user
# token names them by ``upn``; its ``appid`` is the CLI's client id, not theirs.
USER_OID = "00000000-0000-0000-0000-0000000000dd"
USER_UPN = "mallory@contoso.example"
USER_CLAIMS: dict[str, Any] = {
    "oid": USER_OID,
    "upn": USER_UPN,
    "unique_name": USER_UPN,
    "name": "Mallory",
    "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    "idtyp": "user",
}


def unsigned_jwt(audience: str, **claims: Any) -> str:
    """What the SDK decodes (without verifying) to check the audience of its Azure ML token; by
    default the function app's managed identity's (:data:`APP_CLAIMS`)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    body = {
        "aud": audience,
        **APP_CLAIMS,
        "tid": "00000000-0000-0000-0000-0000000000bb",
    }
    body |= {"exp": int(time.time()) + 3600, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


class FakeCredential:
    """A TokenCredential handing out unsigned JWTs whose ``aud`` is the requested resource: the
    function app's identity's, or another's (``claims``: :data:`USER_CLAIMS` for a workspace user)."""

    def __init__(self, **claims: Any) -> None:
        self.scopes: list[str] = []
        self.claims = claims

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        audience = scopes[0].removesuffix("/.default")
        return AccessToken(unsigned_jwt(audience, **self.claims), int(time.time()) + 3600)


def token_claims(header: str | None) -> dict[str, Any]:
    if not header or not header.startswith("Bearer "):
        return {}
    payload = header.removeprefix("Bearer ").split(".")[1]
    payload += "=" * (-len(payload) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload))
    return claims if isinstance(claims, dict) else {}


def token_audience(header: str | None) -> str | None:
    audience = token_claims(header).get("aud")
    return None if audience is None else str(audience)


# --------------------------------------------------------------------------- requests and answers


@dataclass
class Request:
    """A request as a fake reads it: ``path`` URL-decoded, ``query`` one value a name (the last),
    ``body`` the JSON sent (None when there is none); ``status`` is what the fake answered."""

    method: str
    url: str
    host: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    body: Any
    status: int = 0

    @classmethod
    def read(cls, sent: requests.PreparedRequest) -> Request:
        url = urlparse(str(sent.url))
        raw = sent.body
        text = raw.decode() if isinstance(raw, bytes) else raw
        return cls(
            str(sent.method),
            str(sent.url),
            url.hostname or "",
            unquote(url.path),
            {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
            CaseInsensitiveDict(sent.headers),
            json.loads(text) if text else None,
        )

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    @property
    def query_text(self) -> str:
        return urlparse(self.url).query


class Refusal(Exception):
    """Raised by a handler to answer with an error status, in the service's error shape
    (:meth:`FakeService.error`; ``body``: another)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.body = status, code, message, headers or {}, body


class Unexpected(Exception):
    """Raised by a handler for a request the fake does not know: 400, and recorded in ``unexpected``."""


@dataclass
class Fault:
    """A scripted answer for the next ``times`` requests whose method is ``method`` (None: any) and
    whose path matches ``path`` (a regex; None: any): ``status`` with an error body, or ``raise_``
    (what ``requests`` raises), after ``advance`` seconds on the fake's clock."""

    times: int
    status: int = 503
    method: str | None = None
    path: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "ServiceUnavailable"
    message: str = "The service is temporarily unavailable"
    raise_: Callable[[], Exception] | None = None
    advance: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times > 0
            and (self.method is None or method == self.method)
            and (self.path is None or re.search(self.path, path) is not None)
        )


class _Answerer(BaseAdapter):
    """The session's only adapter: the fake answers, nothing leaves the process."""

    def __init__(self, fake: FakeService) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        status, headers, body = self.fake.answer(request)
        raw_bytes = isinstance(body, bytes)  # a file's bytes (a blob), sent as they are
        data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        kind = "application/octet-stream" if raw_bytes else "application/json; charset=utf-8"
        headers = {"Content-Type": kind, "Content-Length": str(len(data)), **headers}
        raw = HTTPResponse(
            body=io.BytesIO(data), headers=headers, status=status, preload_content=False, decode_content=False
        )
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        response.raw = raw
        response.url = str(request.url)
        response.request = request
        response.reason = {200: "OK", 201: "Created", 202: "Accepted", 404: "Not Found"}.get(status, "Status")
        return response

    def close(self) -> None:
        pass


# Each SDK poller's thread (azure-core's LROPoller) and the fake it polls, known from its first request
# (a poller's thread asks for the operation's status before it waits): a world joins its own pollers only.
_POLLED: weakref.WeakKeyDictionary[threading.Thread, FakeService] = weakref.WeakKeyDictionary()


def _is_poller(thread: threading.Thread) -> bool:
    return thread.name.startswith("LROPoller")


class FakeService(RequestsTransport):
    """An Azure service in the process, as the transport of the real SDK client: subclass it and
    answer in :meth:`handle`. ``calls`` holds what was asked (:meth:`record` turns a :class:`Request`
    into the fake's own kind of call), ``unexpected`` what it did not know, ``faults`` what a test
    scripted; one request is answered at a time."""

    unexpected_code = "BadRequest"  # the error code of the 400 answering an unexpected request
    fault_message = "the service answered {status}"  # a scripted fault's message

    def __init__(self) -> None:
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment
        session.adapters.clear()
        for scheme in ("https://", "http://"):
            session.mount(scheme, _Answerer(self))
        super().__init__(session=session)
        self.lock = threading.RLock()
        self.calls: list[Any] = []
        self.unexpected: list[str] = []
        self.faults: list[Fault] = []

    # ------------------------------------------------------------------ what a fake writes

    def record(self, request: Request) -> Any:
        """What ``calls`` keeps of a request (the request itself unless a fake keeps more or less)."""
        return request

    def check(self, call: Any) -> None:
        """What happens before a scripted fault can answer: the checks the service makes first (host,
        token, path, caller: raise :class:`Unexpected` or :class:`Refusal`), a test's hook."""

    def handle(self, call: Any) -> Answer:
        raise NotImplementedError

    def error(self, code: str, message: str) -> Any:
        """An error answer's body, in the service's shape."""
        return {"error": {"code": code, "message": message}}

    def fault_code(self, status: int) -> str:
        """The error code the service sends with a status a test scripted."""
        return {429: "TooManyRequests", 500: "InternalServerError"}.get(status, "ServiceUnavailable")

    # ------------------------------------------------------------------ scripting

    def fail(
        self,
        status: int = 503,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests (``method``, and ``path`` a regex; None: any)
        with ``status`` and the service's error code for it."""
        self.faults.append(
            Fault(
                times,
                status,
                method,
                path,
                dict(headers or {}),
                code or self.fault_code(status),
                message or self.fault_message.format(status=status),
            )
        )

    def time_out(
        self, method: str | None = None, path: str | None = None, *, times: int = 1, seconds: float = 5.0
    ) -> None:
        """The next matching requests get no answer: the read times out after ``seconds``."""
        timeout = requests.exceptions.ReadTimeout
        self.faults.append(Fault(times, 0, method, path, raise_=lambda: timeout("read timed out"), advance=seconds))

    def refuse_connections(self, method: str | None = None, path: str | None = None, *, times: int = 1) -> None:
        refused = requests.exceptions.ConnectionError
        self.faults.append(Fault(times, 0, method, path, raise_=lambda: refused("connection refused")))

    def advance(self, seconds: float) -> None:
        """A scripted fault took ``seconds`` (a timeout): a fake with a clock moves it on."""

    def sleep(self, duration: float) -> None:
        """azure-core's own waits (retry backoff, polling): never slept in real time."""

    # ------------------------------------------------------------------ answering

    def lro_threads(self) -> list[threading.Thread]:
        """The SDK's poller threads alive that poll this fake. A poller started a moment ago that has not
        sent its first request yet is waited for (a few milliseconds) rather than taken for another's."""
        deadline = time.monotonic() + 5.0
        pollers = [t for t in threading.enumerate() if _is_poller(t)]
        while any(t.is_alive() and t not in _POLLED for t in pollers) and time.monotonic() < deadline:
            time.sleep(0.001)
        return [t for t in pollers if _POLLED.get(t) is self]

    def answer(self, sent: requests.PreparedRequest) -> Answer:
        thread = threading.current_thread()
        if _is_poller(thread):
            _POLLED[thread] = self
        request = Request.read(sent)
        with self.lock:
            call = self.record(request)
            self.calls.append(call)
            try:
                self.check(call)
                status, headers, out = self._scripted(call, request) or self.handle(call)
            except Refusal as exc:
                status, headers = exc.status, exc.headers
                out = exc.body if exc.body is not None else self.error(exc.code, exc.message)
            except Unexpected as exc:
                self.unexpected.append(f"{request.method} {call.path}: {exc}")
                status, headers = 400, {}
                out = self.error(self.unexpected_code, f"the fake does not expect this request: {exc}")
            call.status = status
            return status, headers, copy.deepcopy(out)

    def _scripted(self, call: Any, request: Request) -> Answer | None:
        fault = next((f for f in self.faults if f.matches(request.method, call.path)), None)
        if fault is None:
            return None
        fault.times -= 1
        if fault.advance:
            self.advance(fault.advance)
        if fault.raise_ is not None:
            call.status = -1
            raise fault.raise_()
        return fault.status, fault.headers, self.error(fault.code, fault.message)
