"""Retrying calls to Azure inside one delivery's time budget (tenacity).

Event Grid waits 30 s for an answer. Every call an action makes to Azure goes through one
:class:`Budget`, started when the action starts, or, inside :func:`function_app.deadline.one_deadline` (what the trigger
functions wrap each delivery in), when the delivery's first action starts, so that the actions of
one delivery (an event that concerns two models, a webhook batch) share one deadline: throttling (429), timeouts (408 and client-side),
connection failures and 5xx are retried with exponential backoff and jitter, honouring the
service's ``Retry-After`` (seconds or an HTTP date, or ``retry-after-ms``), until the next wait
would end past the deadline (``RETRAIN_DEADLINE_SECONDS``, 25 s by default). Then the last error
is raised as :class:`~handlers.errors.TransientError` so that Event Grid redelivers the event.
Anything else (400, 404, 409, a validation error) is not retried: it is raised as it came, for the
adapter to translate into a :class:`~handlers.errors.PermanentError` that says what to fix. What is
transient is decided in one place, :mod:`function_app.adapters.azure_errors`.

The SDK clients are built with ``retry_total=0`` so that their own azure-core ``RetryPolicy`` does
not retry (and sleep) underneath: tenacity owns the whole budget. The sleep, the clock and the
random source of the jitter are injected; tests pass a sleep that records instead of waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
from azure.core.exceptions import AzureError

from function_app.adapters.azure_errors import describe, is_transient, retry_after, status_of
from function_app.deadline import budget_start
from handlers.errors import TransientError

if TYPE_CHECKING:
    from function_app.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Budget:
    """One action's time budget: every call inside shares the deadline."""

    policy: RetryPolicy
    deadline_at: float

    def call(self, what: str, fn: Callable[[], T], retry_on: frozenset[int] = frozenset()) -> T:
        """``fn()``, retried while it fails transiently and the budget allows; then TransientError.
        ``retry_on``: HTTP statuses that count as transient for this call (409 on an endpoint update
        means "another operation is in progress", not "no")."""
        policy = self.policy

        def again(exc: BaseException) -> bool:
            return is_transient(exc) or (bool(retry_on) and status_of(exc) in retry_on)

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
            retry=tenacity.retry_if_exception(again),
            wait=wait,
            stop=stop,
            sleep=policy.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except AzureError as exc:
            if not again(exc):
                raise
            asked = retry_after(exc, policy.clock())
            raise TransientError(
                f"{what} failed transiently ({describe(exc)}) and the {policy.deadline:g} s budget of this "
                f"attempt is spent; it is tried again later (an event when Event Grid redelivers it, a rollout or "
                "a retirement on the reconciler's next pass)",
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
        """A budget of ``deadline`` seconds from now, or, inside :func:`function_app.deadline.one_deadline`, from when the
        delivery's first budget started."""
        return Budget(self, budget_start(self.clock) + self.deadline)
