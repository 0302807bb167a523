"""The retry budget: how long to wait, and when to give up (no test ever waits)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceResponseTimeoutError

from function_app.delivery import one_delivery
from function_app.retry import RetryPolicy
from handlers.errors import TransientError
from tests.builders import http_error
from tests.fake_arm_common import FakeClock


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


def test_budgets_started_inside_one_delivery_end_when_its_first_one_does() -> None:
    """Event Grid waits 30 s for the whole delivery: a second action (another model, the next event
    of a batch) gets what is left, not a budget of its own."""
    clock = FakeClock()
    retry = policy(clock, deadline=25.0)
    with one_delivery():
        first, _ = failing(http_error(429, {"Retry-After": "20"}))
        retry.budget().call("first action", first)  # succeeds after 20 s
        second, calls = failing(*(http_error(503) for _ in range(100)))
        with pytest.raises(TransientError, match="budget of this attempt is spent"):
            retry.budget().call("second action", second)
    assert sum(clock.slept) <= 25.0
    assert sum(clock.slept[1:]) <= 5.0 and len(calls) >= 2


def test_outside_a_delivery_each_budget_is_its_own() -> None:
    clock = FakeClock()
    retry = policy(clock, deadline=25.0)
    with one_delivery():
        retry.budget()
    clock.sleep(20.0)
    fresh = retry.budget()
    assert fresh.deadline_at == clock.now + 25.0
    with one_delivery():
        clock.sleep(3.0)
        assert retry.budget().deadline_at == clock.now + 25.0  # a new delivery starts its own clock
