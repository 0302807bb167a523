"""Retrying calls to Azure inside one delivery's time budget (tenacity).

Event Grid waits 30 s for an answer. Every call an action makes to Azure goes through one
:class:`Budget`, started when the action starts: throttling (429), timeouts (408 and client-side),
connection failures and 5xx are retried with exponential backoff and jitter, honouring the
service's ``Retry-After`` (seconds or an HTTP date, or ``retry-after-ms``), until the next wait
would end past the deadline (``RETRAIN_DEADLINE_SECONDS``, 25 s by default). Then the last error
is raised as :class:`~handlers.errors.TransientError` so that Event Grid redelivers the event.
Anything else (400, 404, 409, a validation error) is not retried: it is raised as it came, for the
adapter to translate into a :class:`~handlers.errors.PermanentError` that says what to fix.

The SDK clients are built with ``retry_total=0`` so that their own azure-core ``RetryPolicy`` does
not retry (and sleep) underneath: tenacity owns the whole budget. The sleep, the clock and the
random source of the jitter are injected; tests pass a sleep that records instead of waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)

from handlers.errors import TransientError

if TYPE_CHECKING:
    from function_app.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429})  # and every 5xx


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it wraps: raised from, raised while handling, or kept as ``inner_exception``
    (azure-ai-ml wraps service errors in its own MlException)."""
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


_WIRE_ERRORS = (HttpResponseError, ServiceRequestError, ServiceResponseError)


def azure_error(exc: BaseException) -> AzureError | None:
    """The error that says what happened on the wire (an HTTP answer, a failed connection, a timeout),
    else the first azure-core error in the chain of ``exc``."""
    chain = list(_chain(exc))
    wire = next((e for e in chain if isinstance(e, _WIRE_ERRORS)), None)
    return wire or next((e for e in chain if isinstance(e, AzureError)), None)


def status_of(exc: BaseException) -> int | None:
    error = azure_error(exc)
    status = getattr(error, "status_code", None) if isinstance(error, HttpResponseError) else None
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same call again later may succeed."""
    error = azure_error(exc)
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):  # connection failures, timeouts
        return True
    if isinstance(error, HttpResponseError):
        status = status_of(error)
        if status is None:
            # No HTTP status: a credential that could not get a token (the managed identity endpoint
            # did not answer) or a response cut short. Others (raised by the SDK itself) are verdicts.
            return isinstance(error, (ClientAuthenticationError, IncompleteReadError))
        return status in TRANSIENT_STATUS or status >= 500
    return False


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


def retry_after(exc: BaseException, now: float) -> float | None:
    """The wait the service asked for in its answer to ``exc``, in seconds (None: it did not say)."""
    error = azure_error(exc)
    response: Any = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in lowered:
            ms = parse_retry_after(lowered[name], now)
            return None if ms is None else ms / 1000.0
    if "retry-after" in lowered:
        return parse_retry_after(lowered["retry-after"], now)
    return None


def describe(exc: BaseException) -> str:
    """A one-line account of a transient failure, for logs and the TransientError message."""
    error = azure_error(exc) or exc
    status = status_of(exc)
    message = str(getattr(error, "message", None) or error).splitlines()[0][:300] if str(error) else ""
    kind = f"HTTP {status}" if status is not None else type(error).__name__
    return f"{kind}: {message}" if message else kind


@dataclass
class Budget:
    """One action's time budget: every call inside shares the deadline."""

    policy: RetryPolicy
    deadline_at: float

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried while it fails transiently and the budget allows; then TransientError."""
        policy = self.policy

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = retry_after(exc, policy.clock()) if exc else None
            if asked is not None:
                return asked
            backoff = min(policy.maximum, policy.initial * 2.0 ** (state.attempt_number - 1))
            return backoff + policy.rng.uniform(0, policy.jitter)

        def stop(state: tenacity.RetryCallState) -> bool:
            return policy.clock() + state.upcoming_sleep > self.deadline_at

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "transient failure of %s (attempt %d, %s); retrying in %.1f s",
                what,
                state.attempt_number,
                describe(exc) if exc else "?",
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=wait,
            stop=stop,
            sleep=policy.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except AzureError as exc:
            if not is_transient(exc):
                raise
            asked = retry_after(exc, policy.clock())
            raise TransientError(
                f"{what} failed transiently ({describe(exc)}) and the {policy.deadline:g} s budget of this "
                f"delivery is spent; Event Grid will deliver the event again",
                retry_after=asked,
            ) from exc


@dataclass
class RetryPolicy:
    """Built once per worker from settings; :meth:`budget` starts the clock of one action."""

    deadline: float = 25.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    initial: float = 0.5
    maximum: float = 8.0
    jitter: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetryPolicy:
        return cls(deadline=settings.deadline_seconds, **overrides)

    def budget(self) -> Budget:
        return Budget(self, self.clock() + self.deadline)
