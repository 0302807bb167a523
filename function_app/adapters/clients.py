"""What the Azure SDK adapters share: a client built on first use (the SDKs are imported only on
the paths that act), once per worker, and the options that leave retries and the time budget to
:mod:`function_app.retry`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
