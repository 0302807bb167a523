"""What the Azure SDK adapters share: a client built on first use (the SDKs are imported only on
the paths that act), once per worker, the worker's one credential (:class:`SharedCredential`), and the
options that leave retries and the time budget to :mod:`function_app.retry`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo

    from handlers.analysis import Reading

log = logging.getLogger(__name__)


class LazyClient:
    """``client`` itself, or a function that builds it on first use: once, whichever thread asks first."""

    def __init__(self, client: Any) -> None:
        self.factory: Callable[[], Any] | None = client if callable(client) else None
        self._client = None if callable(client) else client
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._client is not None

    def get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    assert self.factory is not None
                    self._client = self.factory()
        return self._client


class SharedCredential:
    """The worker's one Azure credential, shared by every adapter: ``DefaultAzureCredential`` with the
    managed identity ``client_id`` (AZURE_CLIENT_ID), built on the first token any client asks for. Until
    then nothing is imported (azure-identity stays off the dry-run and read-only paths), and whichever
    client asks first, there is one credential and one token cache per worker."""

    def __init__(self, client_id: str | None) -> None:
        self.client_id = client_id
        self._credential = LazyClient(self._build)

    def _build(self) -> Any:
        from azure.identity import DefaultAzureCredential  # lazily, on the first token

        return DefaultAzureCredential(managed_identity_client_id=self.client_id)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token: AccessToken = self._credential.get().get_token(*scopes, **kwargs)
        return token

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        info: AccessTokenInfo = self._credential.get().get_token_info(*scopes, options=options)
        return info

    def close(self) -> None:
        if self._credential.built:
            self._credential.get().close()


_credentials: dict[str | None, SharedCredential] = {}
_credentials_lock = threading.Lock()


def shared_credential(client_id: str | None) -> SharedCredential:
    """The process's one credential for the managed identity ``client_id``: every worker built in
    this process, and the telemetry exporter (:mod:`function_app.telemetry`), share it and its token
    cache."""
    with _credentials_lock:
        credential = _credentials.get(client_id)
        if credential is None:
            credential = _credentials[client_id] = SharedCredential(client_id)
        return credential


def sdk_options(deadline: float, **extra: Any) -> dict[str, Any]:
    """Client options: the SDK's own azure-core retries off (tenacity owns retries and the time
    budget, function_app/retry.py), and timeouts that fit in a delivery's ``deadline``."""
    return {"retry_total": 0, "connection_timeout": min(5.0, deadline), "read_timeout": deadline, **extra}


def logged_readings(
    endpoint: str, source: str, readings: tuple[Reading, Reading | None]
) -> tuple[Reading, Reading | None]:
    """The readings a health source returns, each logged on one line (the numbers, no payload)."""
    for r in readings:
        if r is not None:
            log.info(
                "health %s/%s %s..%s (%s): %d request(s) by code %s, p95 %s ms",
                endpoint,
                r.deployment,
                r.since,
                r.until,
                source,
                r.requests,
                r.codes,
                r.p95_ms,
            )
    return readings
