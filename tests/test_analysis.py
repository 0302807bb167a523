"""The rollout analysis as pure rules: counting failures, the two-proportion test, and the verdicts."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import analysis, proportions
from handlers.analysis import Reading
from handlers.rollout_rules import RolloutRule

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
BAKE = timedelta(minutes=10)


def rule(steps: list[int] | None = None, **health: Any) -> RolloutRule:
    return RolloutRule.model_validate({"steps": steps or [10, 50, 100], "bake": "10m", "health": health})


def reading(
    deployment: str = "cand",
    *,
    ok: int = 0,
    e5xx: int = 0,
    e408: int = 0,
    e424: int = 0,
    throttled: int = 0,
    p95: float | None = 40.0,
    source: str = "metrics",
) -> Reading:
    codes = {(200, 200): ok, (503, None): e5xx, (408, None): e408, (424, 500): e424, (429, None): throttled}
    total = ok + e5xx + e408 + e424 + throttled
    return Reading.of("ep", deployment, "t0", "t1", codes, p95 if total else None, source, f"request for {deployment}")


# --------------------------------------------------------------------------- counting


def test_424_408_and_5xx_count_as_failures_and_429_apart() -> None:
    counts = reading(ok=10, e5xx=1, e408=30, e424=60, throttled=5).counts()
    assert (counts.requests, counts.throttled, counts.served, counts.failures) == (106, 5, 101, 91)
    assert counts.by_class == {"5xx": 1, "408": 30, "424": 60, "model_5xx": 0}
    assert counts.failure_rate == pytest.approx(91 / 101) and counts.throttle_rate == pytest.approx(5 / 106)


def test_a_request_counts_once_in_the_first_class_it_matches() -> None:
    codes = {(500, 500): 2, (200, 503): 3, (424, 502): 4}
    counts = Reading.of("ep", "c", "a", "b", codes, None, "logs", "q").counts()
    assert counts.by_class == {"5xx": 2, "408": 0, "424": 4, "model_5xx": 3} and counts.failures == 9


def test_failure_codes_are_configurable() -> None:
    r = Reading.of("ep", "c", "a", "b", {(404, None): 5, (424, 500): 2, (200, 200): 3}, None, "logs", "q")
    assert r.counts(("4xx",)).by_class == {"4xx": 7}
    assert r.counts(("5xx",)).failures == 0  # a 424 is not a 5xx: only model_5xx or 424 see it
    assert r.counts(("404",)).failures == 5


def test_the_histogram_is_merged_and_sorted() -> None:
    r = Reading.of("ep", "c", "a", "b", [(503, None, 1), (200, 200, 4), (503, None, 2), (408, None, 0)], 1.0, "m", "q")
    assert r.codes == ((200, 200, 4), (503, None, 3)) and r.requests == 7


def test_a_reading_keeps_its_minutes_merged_and_in_order_and_without_them_is_one_minute() -> None:
    r = Reading.of(
        "ep",
        "c",
        "t0",
        "t2",
        {(200, 200): 7, (503, None): 2},
        40.0,
        "metrics",
        "q",
        minutes=[("t1", {(200, 200): 4}, 41.0), ("t0", [(503, None, 2), (200, 200, 3)], None), ("t1", {}, 42.0)],
    )
    assert [m.at for m in r.minutes] == ["t0", "t1"]
    assert r.minutes[0].codes == ((200, 200, 3), (503, None, 2)) and r.minutes[1].p95_ms == 42.0
    assert [m.counted() for m in r.by_minute()] == [(5, 2), (4, 0)]
    whole = Reading.of("ep", "c", "t0", "t2", {(200, 200): 7, (503, None): 2}, 40.0, "logs", "q")
    assert whole.by_minute() == (analysis.Minute("t0", ((200, 200, 7), (503, None, 2)), 40.0),)
    assert json.loads(json.dumps(r.as_dict()))["minutes"][0] == ["t0", [[200, 200, 3], [503, None, 2]], None]


# --------------------------------------------------------------------------- statistics


def brute_fisher(f1: int, n1: int, f0: int, n0: int) -> float:
    total, failed = n1 + n0, f1 + f0
    return sum(
        math.comb(failed, k) * math.comb(total - failed, n1 - k) / math.comb(total, n1)
        for k in range(f1, min(failed, n1) + 1)
        if n1 - k <= total - failed
    )


def test_fisher_matches_the_hypergeometric_sum() -> None:
    for args in [(3, 60, 5, 540), (0, 60, 5, 540), (6, 600, 54, 5400), (1, 5, 0, 100), (60, 60, 5, 540)]:
        assert proportions.fisher_greater(*args) == pytest.approx(brute_fisher(*args), rel=1e-9, abs=1e-300)


@given(
    n1=st.integers(1, 80),
    n0=st.integers(1, 80),
    data=st.data(),
)
def test_fisher_is_a_probability_that_falls_as_the_candidate_fails_more(n1: int, n0: int, data: Any) -> None:
    f0 = data.draw(st.integers(0, n0))
    values = [proportions.fisher_greater(f1, n1, f0, n0) for f1 in range(n1 + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))
    f1 = data.draw(st.integers(0, n1))
    assert values[f1] == pytest.approx(brute_fisher(f1, n1, f0, n0), rel=1e-7, abs=1e-12)


@given(n=st.integers(1, 300), p=st.floats(0.001, 0.999), data=st.data())
def test_the_binomial_tail_is_a_probability_that_falls_with_more_failures(n: int, p: float, data: Any) -> None:
    values = [proportions.binomial_greater(f, n, p) for f in range(n + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))
    f = data.draw(st.integers(0, n))
    brute = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(f, n + 1))
    assert values[f] == pytest.approx(brute, rel=1e-6, abs=1e-12)


@given(
    n1=st.integers(1, 200_000),
    n0=st.integers(1, 200_000),
    r1=st.floats(0, 1),
    r0=st.floats(0, 1),
)
def test_two_proportion_p_values_are_probabilities(n1: int, n0: int, r1: float, r0: float) -> None:
    p, test = proportions.two_proportion(round(r1 * n1), n1, round(r0 * n0), n0)
    assert 0.0 <= p <= 1.0 and test in ("fisher-exact", "z")


def test_small_counts_are_tested_exactly_and_large_ones_with_z_which_agree_at_the_switch() -> None:
    assert proportions.two_proportion(8, 600, 54, 5400)[1] == "fisher-exact"
    n1, n0 = 40_000, 360_000  # a 10% canary whose smallest expected cell is just past the switch (1,000)
    f0 = round(n0 * 0.025)
    for f1 in (1079, 1104, 1118):  # exact p-values of about 1e-2, 1e-3 and 2.5e-4
        p, test = proportions.two_proportion(f1, n1, f0, n0)
        assert test == "z"
        assert 0.8 <= p / proportions.fisher_greater(f1, n1, f0, n0) <= 1.05


# --------------------------------------------------------------------------- verdicts


def test_a_candidate_worse_than_its_baseline_under_the_absolute_limit_is_rolled_back() -> None:
    cand = reading(ok=576, e424=14, e408=10)  # 4.0%: under max_error_rate 5%
    base = reading("blue", ok=5346, e5xx=20, e424=34)  # 1.0%

    v = analysis.judge(rule(), cand, base, BAKE)

    assert (v.status, v.next, v.final, v.test) == ("unhealthy", "rollback", True, "fisher-exact")
    assert v.p_value is not None and v.p_value < v.alpha
    assert "worse than the baseline" in v.why and "24 failure(s) [10 408, 14 424] of 600 request(s) (4.00%)" in v.why
    assert "vs baseline blue: 54 failure(s)" in v.why
    assert (
        analysis.judge(rule(), cand, None, BAKE, fail_fast=False).next == "advance"
    )  # the absolute rule alone lets it through


def test_a_candidate_as_good_as_a_4_percent_baseline_advances() -> None:
    cand = reading(ok=576, e424=12, e5xx=12)  # 4%
    base = reading("blue", ok=5184, e424=108, e408=54, e5xx=54)  # 4%

    v = analysis.judge(rule(), cand, base, BAKE)

    assert (v.status, v.next) == ("healthy", "advance")
    assert v.p_value is not None and v.p_value > 0.4
    assert v.baseline is not None and v.baseline.failure_rate == pytest.approx(0.04)


def test_a_step_where_every_request_failed_is_rolled_back_before_min_requests() -> None:
    cand = reading(e424=3, e408=2)
    v = analysis.judge(rule(), cand, reading("blue", ok=100), timedelta(minutes=1))
    assert (v.status, v.next, v.final) == ("unhealthy", "rollback", False)
    assert "every one of its 5 request(s) failed (p=3.1e-07 < 0.05 at max_error_rate 5.0%; p=1e-08 < 0.2" in v.why


def test_failures_that_do_not_decide_yet_wait_below_min_requests() -> None:
    v = analysis.judge(rule(), reading(ok=9, e424=1), reading("blue", ok=1000, e5xx=10), timedelta(minutes=1))
    assert (v.status, v.next) == ("no_traffic", "wait")


def test_a_clearly_failing_step_is_rolled_back_before_the_end_of_its_bake() -> None:
    cand = reading(ok=40, e424=20)  # a third fails: well above 5%, even at the interim level
    v = analysis.judge(rule(), cand, reading("blue", ok=530, e5xx=5), timedelta(minutes=1))
    assert (v.next, v.final) == ("rollback", False) and "above max_error_rate 5.0% already" in v.why


def test_the_comparison_alone_fails_a_step_fast_when_it_is_decisive() -> None:
    cand = reading(ok=170, e424=8)  # 4.5%: under the limit, far worse than 0.1%
    v = analysis.judge(rule(), cand, reading("blue", ok=1600, e5xx=2), timedelta(minutes=3))
    assert (v.next, v.final) == ("rollback", False) and "worse than the baseline already" in v.why
    assert v.alpha == pytest.approx(analysis.step_alpha(rule()) * analysis.INTERIM_SHARE)


def test_an_interim_look_without_a_breach_bakes_on() -> None:
    v = analysis.judge(rule(), reading(ok=59, e408=1), reading("blue", ok=535, e5xx=5), timedelta(minutes=1))
    assert (v.status, v.next, v.final) == ("healthy", "wait", False) and "no breach so far" in v.why


def test_without_baseline_traffic_only_absolute_limits_apply_and_it_says_so() -> None:
    v = analysis.judge(rule(), reading(ok=590, e424=10), reading("blue"), BAKE)
    assert (v.next, v.p_value) == ("advance", None)
    assert v.note == "baseline blue served no request in the step: absolute limits only"
    assert "(baseline blue served no request in the step: absolute limits only)" in v.why
    none = analysis.judge(rule(), reading(ok=590, e424=10), None, BAKE)
    assert none.note == "no baseline deployment: absolute limits only" and none.baseline is None
    assert none.why.endswith("(no baseline deployment: absolute limits only): within the policy's limits")


def test_a_candidate_without_requests_bakes_on_then_on_no_traffic_decides() -> None:
    empty = reading()
    waiting = analysis.judge(rule(), empty, reading("blue", ok=5000), BAKE)
    assert (waiting.status, waiting.next) == ("no_traffic", "wait") and waiting.candidate.failure_rate is None
    after = analysis.judge(rule(on_no_traffic="hold"), empty, reading("blue", ok=5000), 3 * BAKE)
    assert (after.next, after.status) == ("hold", "no_traffic") and "on_no_traffic is hold" in after.why


def test_a_p95_far_above_the_baseline_s_rolls_back_and_a_missing_one_is_not_judged() -> None:
    slow = analysis.judge(rule(), reading(ok=600, p95=130.0), reading("blue", ok=5400, p95=50.0), BAKE)
    assert slow.next == "rollback" and slow.latency_ratio == pytest.approx(2.6)
    assert "2.60 times the baseline's 50 ms, above max_latency_ratio 1.5" in slow.why
    unknown = analysis.judge(rule(), reading(ok=600, p95=130.0), reading("blue", ok=5400, p95=None), BAKE)
    assert (unknown.next, unknown.latency_ratio) == ("advance", None)
    off = analysis.judge(rule(max_latency_ratio=None), reading(ok=600, p95=130.0), reading("blue", ok=5400), BAKE)
    assert off.next == "advance"


def test_throttling_is_reported_apart_and_judged_by_its_own_limit() -> None:
    cand = reading(ok=420, throttled=180)
    base = reading("blue", ok=5400)
    unlimited = analysis.judge(rule(), cand, base, BAKE)
    assert unlimited.next == "advance" and unlimited.candidate.failures == 0 and unlimited.candidate.throttled == 180
    limited = analysis.judge(rule(max_throttle_rate=0.1), cand, base, BAKE)
    assert limited.next == "rollback" and "180 of 600 request(s) throttled (429, 30.0%)" in limited.why


def test_an_equally_bad_baseline_holds_the_step_until_the_longest_bake_then_the_limit_applies() -> None:
    cand, base = reading(ok=540, e5xx=60), reading("blue", ok=4860, e5xx=540)  # 10% both, in the same minutes
    held = analysis.judge(rule(), cand, base, BAKE)
    assert (held.status, held.next) == ("endpoint_failing", "hold")
    assert "baseline 540 failure(s) of 5400" in held.why and "the endpoint's problem, not the candidate's" in held.why
    assert held.note is not None and "1 minute(s) the baseline failed in too" in held.note
    late = analysis.judge(rule(), cand, base, 3 * BAKE)  # max_bake (three bakes) is over: every minute counts
    assert late.next == "rollback" and "is above max_error_rate 5.0%" in late.why


def test_the_verdict_records_every_number_and_the_limits() -> None:
    cand, base = reading(ok=590, e424=10, p95=44.0), reading("blue", ok=5346, e408=54, p95=40.0)
    got = analysis.judge(rule(), cand, base, BAKE).as_dict()
    assert got["candidate"]["by_class"] == {"5xx": 0, "408": 0, "424": 10, "model_5xx": 0}
    assert got["baseline"]["failures"] == 54 and got["baseline"]["served"] == 5400
    assert got["candidate"]["codes"] == ((200, 200, 590), (424, 500, 10))  # the raw numbers, as read
    assert got["limits"] == {
        "max_error_rate": 0.05,
        "min_requests": 20,
        "max_latency_ms": None,
        "max_latency_ratio": 1.5,
        "max_throttle_rate": None,
        "confidence": 0.99,
        "failure_codes": ["5xx", "408", "424", "model_5xx"],
        "bake_s": 600.0,
    }
    assert (got["source"], got["request"], got["baseline_request"]) == (
        "metrics",
        "request for cand",
        "request for blue",
    )
    assert got["p_value"] is not None and got["test"] == "fisher-exact" and got["baked_s"] == 600.0
    assert got["latency_ratio"] == pytest.approx(1.1)
    assert json.loads(json.dumps(got))["candidate"]["codes"] == [[200, 200, 590], [424, 500, 10]]  # recordable


def test_the_comparison_spends_half_the_rollout_s_error_and_the_last_step_a_quarter_share() -> None:
    # [10, 50, 100]: two full shares and the last step's quarter share of 0.01 / 2
    assert analysis.step_alpha(rule([10, 50, 100])) == pytest.approx(0.005 / 2.25)
    assert analysis.step_alpha(rule([10, 50, 100]), last=True) == pytest.approx(0.005 / 9)
    assert analysis.step_alpha(rule([5, 25, 50, 100], confidence=0.95)) == pytest.approx(0.025 / 3.25)
    # a single step has the comparison's whole error, judged as the last one or in the same minutes
    assert analysis.step_alpha(rule([100]), last=True) == pytest.approx(0.005)
    assert analysis.step_alpha(rule([100])) == pytest.approx(0.005)


@given(st.lists(st.integers(1, 99), max_size=8, unique=True), st.floats(0.5, 0.999))
def test_the_steps_shares_never_add_up_to_more_than_the_rollout_s_error(below: list[int], confidence: float) -> None:
    r = rule([*sorted(below), 100], confidence=confidence)
    error = 1 - confidence
    shares = [analysis.step_alpha(r)] * len(below)
    assert sum(shares) + analysis.step_alpha(r, last=True) == pytest.approx(error * analysis.COMPARISON_SHARE)
    assert sum(shares) + analysis.step_alpha(r) <= 0.8 * error + 1e-12  # the last step judged in the same minutes
    assert analysis.step_alpha(r, last=True) <= analysis.step_alpha(r)


def test_without_fail_fast_the_absolute_limits_judge_once_the_bake_is_over() -> None:
    failing = reading(e424=60)
    assert analysis.judge(rule(), failing, None, timedelta(minutes=1), fail_fast=False).next == "wait"
    assert analysis.judge(rule(), failing, None, BAKE, fail_fast=False).next == "rollback"


# --------------------------------------------------------------------------- window and baseline


def test_the_window_ends_the_source_s_lag_before_now() -> None:
    started = NOW - timedelta(minutes=12)
    assert analysis.window(rule().health, started, NOW, "metrics") == (started, NOW - timedelta(minutes=3))
    assert analysis.window(rule().health, started, NOW, "logs") == (started, NOW - timedelta(minutes=5))
    assert analysis.window(rule(lag="1m").health, started, NOW, "logs")[1] == NOW - timedelta(minutes=1)
    early = NOW - timedelta(minutes=1)
    assert analysis.window(rule().health, early, NOW, "metrics") == (early, early)  # the lag has not passed: empty


def test_the_baseline_is_the_deployment_that_had_the_most_traffic() -> None:
    assert analysis.baseline_of({"blue": 70, "green": 30}, "cand") == "blue"
    assert analysis.baseline_of({"b": 50, "a": 50}, "cand") == "a"
    assert analysis.baseline_of({"cand": 100, "old": 0}, "cand") is None


@given(
    served=st.integers(1, 2000),
    base_served=st.integers(0, 20000),
    data=st.data(),
    minutes=st.integers(1, 40),
)
def test_more_candidate_failures_never_turn_a_rollback_into_anything_else(
    served: int, base_served: int, data: Any, minutes: int
) -> None:
    base_failed = data.draw(st.integers(0, base_served))
    failed = data.draw(st.integers(0, served))
    more = data.draw(st.integers(failed, served))
    base = reading("blue", ok=base_served - base_failed, e5xx=base_failed)
    baked = timedelta(minutes=minutes)
    first = analysis.judge(rule(), reading(ok=served - failed, e424=failed), base, baked)
    second = analysis.judge(rule(), reading(ok=served - more, e424=more), base, baked)
    assert first.next in ("advance", "rollback", "hold", "wait")
    if first.next == "rollback":
        assert second.next == "rollback", (first.why, second.why)
    if first.p_value is not None and second.p_value is not None and first.test == second.test:
        assert second.p_value <= first.p_value + 1e-12  # (across the exact/z switch it may step a little)


def test_a_candidate_without_requests_beside_a_busy_baseline_does_not_blame_the_baseline() -> None:
    v = analysis.judge(rule(), reading(), reading("blue", ok=5000), BAKE)
    assert v.note is None and v.p_value is None and v.next == "wait"
