"""Translating azure.core exceptions into the service's error tree, at the adapter boundary.

Transient: no connection, timeouts, throttling (429), 408 and 5xx, and a credential that could not
reach its token endpoint: raised so that Event Grid redelivers. Everything else the SDKs raise is
permanent: recorded and acknowledged. A credential that gets no token for another reason (a wrong
``AZURE_CLIENT_ID``, an identity not assigned to the app: ``ClientAuthenticationError`` without a
status) is a configuration fault: permanent, with a message that says what to check. azure-ai-ml wraps service errors in its own exceptions (all of them
``AzureError``s); an error is judged by the wire error it carries, wherever it is in the chain.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from handlers.errors import PermanentError, TransientError

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # colour codes (colorama) in SDK messages
IDENTITY_FIX = (
    "check the app setting AZURE_CLIENT_ID (the client id of the function app's user-assigned managed identity; "
    "empty for a system-assigned one) and that this identity is assigned to the function app and holds a role "
    "on the workspace: the service's custom role (infra/modules/workspace-access.bicep), or AzureML Data "
    "Scientist where RETRAIN_WORKSPACE_ROLE chose it"
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # and any other 5xx
_WIRE_ERRORS = (HttpResponseError, ServiceRequestError, ServiceResponseError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it wraps: raised from, raised while handling, or kept as ``inner_exception``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = getattr(current, "inner_exception", None)
        todo.extend(e for e in (current.__cause__, current.__context__, inner) if isinstance(e, BaseException))


def wire_error(exc: BaseException) -> AzureError | None:
    """The error that says what happened on the wire (an HTTP answer, a failed connection, a timeout),
    else the first azure-core error in the chain of ``exc``."""
    chain = list(_chain(exc))
    wire = next((e for e in chain if isinstance(e, _WIRE_ERRORS)), None)
    return wire or next((e for e in chain if isinstance(e, AzureError)), None)


def status_of(exc: BaseException) -> int | None:
    error = wire_error(exc)
    status = getattr(error, "status_code", None) if isinstance(error, HttpResponseError) else None
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same call again later may succeed."""
    error = wire_error(exc)
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):  # connection failures, timeouts
        return True
    if isinstance(error, HttpResponseError):
        status = status_of(error)
        if status is None:
            # No HTTP status: a response cut short, or a credential that could not get a token: that
            # is transient only when it could not reach its token endpoint; otherwise (a wrong client
            # id, no identity) it is a configuration fault that no retry mends. Others (raised by the
            # SDK itself) are verdicts.
            if isinstance(error, ClientAuthenticationError):
                return any(isinstance(e, (ServiceRequestError, ServiceResponseError)) for e in _chain(exc))
            return isinstance(error, IncompleteReadError)
        return status in TRANSIENT_STATUS or status >= 500
    return False


def is_identity_fault(exc: BaseException) -> bool:
    """A credential that got no token, and not for want of a connection: the identity is misconfigured."""
    error = wire_error(exc)
    return isinstance(error, ClientAuthenticationError) and status_of(exc) is None and not is_transient(exc)


def plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return _ANSI.sub("", text)


def parse_retry_after(value: str, now: float) -> float | None:
    """``Retry-After``: a number of seconds or an HTTP date (relative to ``now``, epoch seconds)."""
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """The wait the service asked for in its answer to ``exc``, in seconds (None: it did not say).
    ``now`` (epoch seconds) dates an HTTP-date ``Retry-After``; the clock is read if it is not given."""
    response: Any = getattr(wire_error(exc), "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    moment = time.time() if now is None else now
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in lowered:
            ms = parse_retry_after(lowered[name], moment)
            return None if ms is None else ms / 1000.0
    if "retry-after" in lowered:
        return parse_retry_after(lowered["retry-after"], moment)
    return None


def describe(exc: BaseException) -> str:
    """A one-line account of an SDK error: its HTTP status (or kind) and the first line of its message."""
    error = wire_error(exc) or exc
    status = status_of(exc)
    text = plain(str(getattr(error, "message", None) or error))
    message = [line.strip() for line in text.splitlines() if line.strip()]
    kind = f"HTTP {status}" if status is not None else type(error).__name__
    return f"{kind}: {message[0][:300]}" if message else kind


def translate(
    exc: AzureError,
    what: str,
    fix: str = "",
    *,
    service: str = "",
    where: str = "",
    refused: str = "",
    roles_settling: bool = False,
) -> TransientError | PermanentError:
    """The service's error for an SDK error raised while doing ``what``: the one translator of the
    adapters. What the caller knows makes the message say what to do: ``fix`` the remedy, ``service``
    which service answered ("Azure ML"), ``where`` where a missing thing was looked for ("workspace
    w"), ``refused`` what to grant on a 401 or 403. ``roles_settling``: the worker started less than an
    hour ago, when a 403 may be a role assignment made at deployment that has not taken effect yet:
    retried (transient) rather than recorded."""
    status = status_of(exc)
    if is_transient(exc):
        if status is None:
            return TransientError(
                f"{what}: cannot reach the service ({type(wire_error(exc) or exc).__name__}); will retry"
            )
        return TransientError(f"{what}: the service answered {status}; will retry", retry_after(exc))
    if is_identity_fault(exc):
        return PermanentError(
            f"{what}: the function app's identity could not get a token ({describe(exc)}); {IDENTITY_FIX}"
        )
    hint = f"; {fix}" if fix else ""
    if not service:
        if status is not None:
            error = wire_error(exc)
            return PermanentError(
                f"{what}: the service answered {status}: {getattr(error, 'reason', None) or describe(exc)}{hint}"
            )
        return PermanentError(f"{what}: {describe(exc)}{hint}")
    message = describe(exc)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return PermanentError(f"{what} not found{f' in {where}' if where else ''}{hint} ({service}: {message})")
    if status == 403 and roles_settling and refused:
        return TransientError(
            f"{what}: {service} refused access ({message}); role assignments take up to an hour to take effect "
            f"after deployment, so this is retried; if it persists, {refused}"
        )
    if status in (401, 403) and refused:
        return PermanentError(f"{what}: {service} refused access ({message}); {refused}")
    return PermanentError(f"{what}: {message}{hint}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except AzureError as exc:
        raise translate(exc, what) from exc
