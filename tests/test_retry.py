"""The retry budget: what is transient, how long to wait, and when to give up (no test ever waits)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from azure.ai.ml.exceptions import MlException
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

from function_app.retry import RetryPolicy, is_transient, parse_retry_after, retry_after
from handlers.errors import TransientError
from tests.fake_arm import FakeClock


class Response:
    """Just what azure-core's HttpResponseError reads from a response."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "Status"
        self.headers = headers or {}
        self.request = None

    def text(self) -> str:
        return ""


def http_error(status: int, headers: dict[str, str] | None = None) -> HttpResponseError:
    return HttpResponseError(message=f"HTTP {status}", response=Response(status, headers))


def failing(*errors: Exception, result: str = "done") -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``errors`` one after the other, then returns ``result``."""
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return call, calls


def policy(clock: FakeClock, deadline: float = 25.0) -> RetryPolicy:
    return RetryPolicy(deadline=deadline, sleep=clock.sleep, clock=clock, rng=random.Random(4))


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_timeouts_and_server_errors_are_transient(status: int) -> None:
    assert is_transient(http_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412])
def test_client_errors_are_permanent(status: int) -> None:
    assert not is_transient(http_error(status))


def test_connection_failures_timeouts_and_token_failures_are_transient() -> None:
    assert is_transient(ServiceRequestError("connection refused"))
    assert is_transient(ServiceResponseError("connection reset"))
    assert is_transient(ServiceResponseTimeoutError("read timed out"))
    assert is_transient(ClientAuthenticationError("the managed identity endpoint did not answer"))
    assert not is_transient(ClientAuthenticationError(response=Response(401)))  # ARM refused the token
    assert not is_transient(ValueError("a bug is not retried"))


def test_an_error_wrapped_by_azure_ai_ml_is_judged_by_what_happened_on_the_wire() -> None:
    wrapped = MlException(message="validation failed", no_personal_data_message="x", error=http_error(503))
    assert is_transient(wrapped)

    def lookup() -> None:
        try:
            raise http_error(404)
        except HttpResponseError as exc:
            raise MlException(message="asset not found", no_personal_data_message="x") from exc

    with pytest.raises(MlException) as caught:
        lookup()
    assert not is_transient(caught.value)


def test_retry_after_is_read_in_seconds_as_an_http_date_or_in_milliseconds() -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(format_datetime(datetime(2026, 11, 25, 10, 0, 7, tzinfo=UTC), usegmt=True), now) == 7.0
    assert parse_retry_after("yesterday-ish", now) is None
    assert retry_after(http_error(429, {"retry-after-ms": "1500"}), now) == 1.5
    assert retry_after(http_error(429, {"Retry-After": "3"}), now) == 3.0
    assert retry_after(http_error(503), now) is None


def test_a_throttled_call_waits_what_retry_after_asks_then_succeeds() -> None:
    clock = FakeClock()
    call, calls = failing(http_error(429, {"Retry-After": "2"}))
    assert policy(clock).budget().call("listing", call) == "done"
    assert (len(calls), clock.slept) == (2, [2.0])


def test_backoff_grows_exponentially_with_jitter_when_the_service_names_no_wait() -> None:
    clock = FakeClock()
    call, calls = failing(*(http_error(503) for _ in range(4)))
    policy(clock).budget().call("listing", call)
    assert len(calls) == 5
    for attempt, slept in enumerate(clock.slept):
        assert 0.5 * 2**attempt <= slept <= 0.5 * 2**attempt + 0.5


def test_the_budget_gives_up_before_a_wait_would_pass_the_deadline() -> None:
    clock = FakeClock()
    start = clock.now
    call, calls = failing(*(http_error(503) for _ in range(100)))
    with pytest.raises(TransientError) as caught:
        policy(clock, deadline=25.0).budget().call("submitting job j", call)
    assert clock.now - start <= 25.0
    assert len(calls) == len(clock.slept) + 1
    assert "submitting job j failed transiently (HTTP 503" in str(caught.value)
    assert isinstance(caught.value.__cause__, HttpResponseError)


def test_slow_failures_count_against_the_budget() -> None:
    clock = FakeClock()
    start = clock.now

    def times_out() -> Any:
        clock.now += 10.0  # the read timeout of one attempt
        raise ServiceResponseTimeoutError("read timed out")

    with pytest.raises(TransientError):
        policy(clock).budget().call("reading", times_out)
    assert clock.now - start <= 25.0 + 10.0  # an attempt may start just before the deadline, never a wait
    assert sum(clock.slept) < 25.0


def test_a_retry_after_longer_than_the_budget_is_passed_on_not_slept() -> None:
    clock = FakeClock()
    call, calls = failing(http_error(429, {"Retry-After": "60"}))
    with pytest.raises(TransientError) as caught:
        policy(clock).budget().call("listing", call)
    assert (len(calls), clock.slept, caught.value.retry_after) == (1, [], 60.0)


def test_a_permanent_error_is_raised_at_once_as_it_came() -> None:
    clock = FakeClock()
    error = ResourceNotFoundError("no such component")
    call, calls = failing(error)
    with pytest.raises(ResourceNotFoundError) as caught:
        policy(clock).budget().call("getting", call)
    assert caught.value is error and len(calls) == 1 and clock.slept == []


def test_calls_inside_one_budget_share_its_deadline() -> None:
    clock = FakeClock()
    budget = policy(clock, deadline=10.0).budget()
    first, _ = failing(http_error(429, {"Retry-After": "6"}))
    budget.call("first", first)
    second, calls = failing(http_error(429, {"Retry-After": "6"}))
    with pytest.raises(TransientError):
        budget.call("second", second)
    assert (clock.slept, len(calls)) == ([6.0], 1)
