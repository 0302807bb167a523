"""Translating azure.core exceptions into the service's error tree, at the adapter boundary.

Transient: no connection, timeouts, throttling (429), 408 and 5xx: raised so that Event Grid
redelivers. Everything else the SDK raises is permanent: recorded and acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError

from handlers.errors import PermanentError, TransientError

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def retry_after(exc: HttpResponseError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(exc: AzureError, what: str) -> TransientError | PermanentError:
    """The service's error for an SDK error raised while doing ``what``."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{what}: cannot reach the service ({type(exc).__name__}); will retry")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status in TRANSIENT_STATUS or status >= 500:
            return TransientError(f"{what}: the service answered {status}; will retry", retry_after(exc))
        return PermanentError(f"{what}: the service answered {status}: {exc.reason or exc.message}")
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except AzureError as exc:
        raise translate(exc, what) from exc
