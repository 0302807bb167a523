"""The rules for a candidate that fails every request (handlers/all_failed.py), as pure functions: on its
own, and in an outage the baseline fails in too, where a candidate that has not answered one request since
its traffic began is judged at the level of the other minutes."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import all_failed
from handlers.minutes import Row


def row(served: int, failures: int, base_served: int, base_failures: int, *, shared: bool = True) -> Row:
    """A minute of the step; ``shared``: the endpoint failed in it (left out of the absolute limits)."""
    return Row("2026-12-06T10:00:00.000Z", served, failures, base_served, base_failures, True, shared,
               "shared" if shared else None)  # fmt: skip


# 60 requests a minute at 10%: the first two minutes of traffic in an outage failing the baseline about half
FIRST_TWO = [row(2, 2, 54, 32), row(5, 5, 58, 29)]


def test_a_candidate_that_never_answered_is_rolled_back_at_the_level_of_the_other_minutes() -> None:
    found = all_failed.in_outage(FIRST_TWO, answered=False)
    assert found is not None and found.rolls_back
    assert (found.served, found.base_failures, found.base_served) == (7, 61, 112)
    assert found.p_value == pytest.approx(0.0144, abs=1e-4) and found.level == all_failed.ALL_FAILED_BASELINE
    assert found.shared == tuple(FIRST_TWO) and not found.answered


def test_one_that_answered_before_needs_the_outage_level() -> None:
    same = all_failed.in_outage(FIRST_TWO, answered=True)
    assert same is not None and same.level == all_failed.ALL_FAILED_OUTAGE and not same.rolls_back  # 0.014
    found = all_failed.in_outage([row(6, 6, 54, 22)], answered=True)
    assert found is not None and found.rolls_back and found.p_value == pytest.approx(0.0075, abs=1e-4)


def test_a_share_of_the_outage_or_too_few_requests_to_tell_do_not_roll_back() -> None:
    assert all_failed.in_outage([row(6, 3, 54, 22)], answered=False) is None  # its share: 3 of 6
    few = all_failed.in_outage([row(2, 2, 58, 30)], answered=False)  # 2 of 2 at half: nothing to tell
    assert few is not None and not few.rolls_back and few.p_value == pytest.approx(0.28, abs=0.01)
    assert all_failed.in_outage([row(1, 1, 58, 30)], answered=False) is None  # one request proves nothing
    calm = [row(3, 3, 54, 0, shared=False)]  # no outage: the rule on its own minutes decides (alone)
    assert all_failed.in_outage(calm, answered=False) is None


def test_answered_means_one_request_served_without_a_failure() -> None:
    assert all_failed.answered([row(2, 2, 54, 32), row(5, 4, 58, 29)])
    assert not all_failed.answered(FIRST_TWO)
    assert not all_failed.answered([row(0, 0, 54, 0)])  # no traffic yet is no answer


def test_every_request_failing_on_its_own_is_rolled_back_from_two() -> None:
    found = all_failed.alone(2, 2, [(2, 2, 0, 18)], 0.05)
    assert found is not None and found.above == pytest.approx(0.0025) and found.worse == pytest.approx(1 / 190)
    assert all_failed.alone(1, 1, [(1, 1, 0, 9)], 0.05) is None
    assert all_failed.alone(5, 4, [(5, 4, 0, 45)], 0.05) is None


def _binomial(k: int, n: int, u: float) -> float:
    return math.comb(n, k) * u**k * (1 - u) ** (n - k)


@settings(max_examples=40, deadline=None)
@given(
    minutes=st.lists(st.tuples(st.integers(1, 6), st.integers(5, 20), st.floats(0.05, 0.8)), min_size=1, max_size=2),
    answered=st.booleans(),
)
def test_a_candidate_as_good_as_the_baseline_is_rolled_back_in_an_outage_at_most_at_the_level(
    minutes: list[tuple[int, int, float]], answered: bool
) -> None:
    # Each minute both deployments fail each request with the outage's rate u (the candidate served n1, the
    # baseline n0), every minute taken for shared. The rule needs every one of the candidate's requests to fail
    # (probability u ** n1 a minute); summed exactly over the baseline's failures, how often it then fires is
    # the false rollbacks the level allows in that outage: never more than the level (ALL_FAILED_BASELINE for a
    # candidate that has not answered one request yet: the error budget's share the docs account for).
    level = all_failed.ALL_FAILED_OUTAGE if answered else all_failed.ALL_FAILED_BASELINE
    every = math.prod(u**n1 for n1, _, u in minutes)
    fired = 0.0
    for f0s in itertools.product(*(range(n0 + 1) for _, n0, _ in minutes)):
        chance = every * math.prod(_binomial(f0, n0, u) for f0, (_, n0, u) in zip(f0s, minutes, strict=True))
        rows = [row(n1, n1, n0, f0) for f0, (n1, n0, _) in zip(f0s, minutes, strict=True)]
        found = all_failed.in_outage(rows, answered)
        if chance and found is not None and found.rolls_back:
            fired += chance
    assert fired <= level * (1 + 1e-9)
