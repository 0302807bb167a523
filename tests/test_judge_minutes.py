"""The judge on per-minute readings (issue 23): shared bursts hold, a candidate bad on its own rolls
back, a handful of failures at low volume does not decide, every request failing is caught at once,
the last step is compared with the baseline's earlier minutes, latency by the per-minute p95s."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from handlers import analysis
from handlers.analysis import Reading
from handlers.rollout_rules import RolloutRule

OK, FAIL = (200, 200), (503, None)


def rule(**health: Any) -> RolloutRule:
    return RolloutRule.model_validate({"steps": [10, 50, 100], "bake": "10m", "health": health})


def at(minute: int) -> str:
    return f"2026-12-06T10:{minute:02d}:00.000Z"


def reading(
    deployment: str,
    minutes: list[tuple[int, int]],
    start: int = 0,
    p95: list[float] | None = None,
    history: list[tuple[int, int]] = (),  # type: ignore[assignment]
) -> Reading:
    """Minutes of (served, failed) from minute ``start``; ``p95`` each minute's (default 40 ms); ``history``
    the minutes before (of 09:xx, ending at 09:59)."""
    before = [
        (f"2026-12-06T09:{60 - len(history) + i:02d}:00.000Z", {OK: s - f, FAIL: f}, None)
        for i, (s, f) in enumerate(history)
    ]
    per = [
        (at(start + i), {OK: s - f, FAIL: f}, (p95[i] if p95 else 40.0) if s else None)
        for i, (s, f) in enumerate(minutes)
    ]
    served, failed = sum(s for s, _ in minutes), sum(f for _, f in minutes)
    weighted = sum(s * p for (s, _), (_, _, p) in zip(minutes, per, strict=True) if p is not None)
    return Reading.of(
        "ep",
        deployment,
        at(start),
        at(start + len(minutes)),
        {OK: served - failed, FAIL: failed},
        weighted / served if served else None,  # as the metrics source weighs the minutes' p95s
        "metrics",
        f"request for {deployment}",
        minutes=per,
        history=before,
    )


def judge(cand: list[tuple[int, int]], base: list[tuple[int, int]], *, minutes: int | None = None, **kw: Any) -> Any:
    baked = timedelta(minutes=minutes if minutes is not None else len(cand))
    return analysis.judge(kw.pop("rule", rule()), reading("cand", cand), reading("blue", base), baked, **kw)


def test_a_candidate_failing_everything_in_an_outage_the_baseline_only_half_fails_rolls_back_at_once() -> None:
    # 60 requests a minute at 10%: the candidate's 6 all fail while the baseline fails 22 of 54 in the same minute
    v = judge([(6, 6)], [(54, 22)], minutes=1)
    assert v.minutes[-1][-1] == "shared"  # the minute is the endpoint's failing one
    assert (v.status, v.next) == ("unhealthy", "rollback")
    assert "every one of its 6 request(s) failed, in minutes the endpoint failed in too" in v.why
    assert "while the baseline failed 22 of 54 in the same minutes (p=0.0075 < 0.2)" in v.why
    assert "it has not answered one request since its traffic began" in v.why
    answered = judge([(6, 0)] * 3 + [(6, 6)], [(54, 0)] * 3 + [(54, 22)], minutes=1, step_since=at(3))
    assert answered.next == "rollback"  # a later step failing every request: the candidate's all the same
    assert "(p=0.0075 < 0.01): the candidate's failures, not the outage's" in answered.why


def test_a_candidate_that_never_answered_through_its_first_two_minutes_of_outage_rolls_back() -> None:
    # 60 a minute at 10%, the first two minutes of traffic in an outage failing the baseline more than half the time:
    # 7 of 7 against 61 of 112 (p=0.014) is what a healthy candidate does about once in a hundred such starts
    cand, base = [(2, 2), (5, 5)], [(54, 32), (58, 29)]
    v = judge(cand, base)
    assert (v.status, v.next, v.final) == ("unhealthy", "rollback", False)
    assert [m[-1] for m in v.minutes] == ["shared", "shared"]
    assert "every one of its 7 request(s) failed" in v.why and "61 of 112" in v.why and "< 0.2" in v.why
    # the same two minutes at a later step, once the candidate has answered requests: its share of an outage
    later = judge([(6, 0)] * 3 + cand, [(54, 0)] * 3 + base, minutes=2, step_since=at(3))
    assert (later.status, later.next) == ("endpoint_failing", "hold")


def test_a_healthy_candidate_failing_with_the_outage_holds() -> None:
    v = judge([(6, 3)], [(54, 22)], minutes=1)  # its share of the outage
    assert (v.status, v.next) == ("endpoint_failing", "hold")
    few = judge([(2, 2)], [(58, 30)], minutes=1)  # 2 of 2 when the baseline fails half: nothing to tell
    assert few.next == "hold"


def test_a_failure_spike_the_baseline_shares_holds_the_step_and_says_so() -> None:
    cand = [(60, 1)] * 3 + [(60, 30)]  # half of everything fails in the latest minute
    base = [(540, 5)] * 3 + [(540, 270)]
    v = judge(cand, base)
    assert (v.status, v.next, v.final) == ("endpoint_failing", "hold", False)
    assert "baseline 270 failure(s) of 540" in v.why and "the endpoint's problem, not the candidate's" in v.why
    assert v.minutes[-1] == (at(3), 60, 30, 540, 270, "shared")  # the minute, as the record keeps it
    assert v.p_value is not None and v.p_value > 0.25  # the comparison in the same minutes sees nothing either
    alone = analysis.judge(rule(), reading("cand", cand), None, timedelta(minutes=4))  # without a baseline:
    assert alone.next == "wait" and alone.note is not None and "1 burst minute(s)" in alone.note  # a burst


def test_after_a_shared_spike_the_step_is_judged_on_its_own_minutes_and_advances() -> None:
    cand = [(60, 1)] * 4 + [(60, 30)] + [(60, 0)] * 5
    base = [(540, 5)] * 4 + [(540, 270)] + [(540, 5)] * 5
    v = judge(cand, base)
    assert (v.status, v.next, v.final) == ("healthy", "advance", True)
    assert "its own minutes: 4 of 540" in v.why
    assert v.note is not None and "1 minute(s) the baseline failed in too" in v.note


def test_a_spike_that_lasts_past_max_bake_counts_again() -> None:
    cand, base = [(60, 30)] * 30, [(540, 270)] * 30  # the endpoint fails half of everything for half an hour
    held = judge(cand, base, minutes=29)
    assert held.next == "hold"
    late = judge(cand, base, minutes=30)  # max_bake (three bakes) is over: every minute counts
    assert late.next == "rollback" and "above max_error_rate 5.0%" in late.why


def test_a_candidate_bad_on_its_own_is_rolled_back() -> None:
    v = judge([(60, 3)] * 10, [(540, 5)] * 10)  # 5% against 1%, in the same minutes
    assert (v.status, v.next) == ("unhealthy", "rollback")
    assert "worse than the baseline" in v.why and v.test is not None and v.test.startswith("minutes-")
    assert v.comparison is not None and v.comparison["observed"] == 30 and v.comparison["minutes"] == 10


def test_two_failures_at_a_few_requests_a_minute_do_not_roll_back() -> None:
    cand = [(1, 0)] * 18 + [(1, 1), (1, 1)]  # 2 failures of 20 requests: 10%, twice the limit
    base = [(9, 0)] * 9 + [(9, 1)] + [(9, 0)] * 10  # the baseline's 1 of 180
    for minutes in (2, 10, 20):
        v = judge(cand[:minutes] if minutes < 20 else cand, base[:minutes], minutes=minutes)
        assert v.next in ("wait", "advance"), v.why
    final = judge(cand, base)
    assert final.next == "advance" and final.p_value is not None and final.p_value > 0.01


def test_every_request_failing_is_caught_within_two_minutes_of_traffic() -> None:
    v = judge([(1, 1), (1, 1)], [(9, 0), (9, 0)])  # 2 of 2 failed at 10 requests a minute
    assert (v.next, v.final) == ("rollback", False)
    assert "every one of its 2 request(s) failed (p=0.0025 < 0.05 at max_error_rate 5.0%; p=0.01 < 0.2" in v.why
    one = judge([(1, 1)], [(9, 0)])  # one request proves nothing yet
    assert one.next == "wait"
    during = judge([(60, 60)], [(540, 270)])  # failing everything in a minute the baseline fails half of
    assert during.next == "rollback" and during.minutes[0][-1] is None  # not the endpoint's: the candidate's


def test_the_last_step_is_compared_with_the_baseline_s_earlier_minutes() -> None:
    earlier = [(60, 1)] * 10 + [(300, 3)] * 10
    base = [(540, 5)] * 10 + [(300, 3)] * 10
    bad = earlier + [(600, 30)] * 10  # at 100%: 5% against the baseline's 1% before
    v = analysis.judge(
        rule(),
        reading("cand", bad),
        reading("blue", base),
        timedelta(minutes=10),
        step_since=at(20),
    )
    assert v.next == "rollback" and v.test is not None and v.test.startswith("history-")
    assert "earlier in the rollout" in v.why and v.candidate.served == 6000  # the step's own counts
    assert v.alpha == pytest.approx(analysis.step_alpha(rule(), last=True) * analysis.FINAL_SHARE)  # its smaller share
    middle = analysis.judge(
        rule(), reading("cand", earlier), reading("blue", base), timedelta(minutes=10), step_since=at(10)
    )
    assert middle.alpha == pytest.approx(analysis.step_alpha(rule()) * analysis.FINAL_SHARE)
    assert middle.alpha == pytest.approx(v.alpha * 4)  # a step below 100%: a full share
    good = earlier + [(600, 6)] * 10
    ok = analysis.judge(rule(), reading("cand", good), reading("blue", base), timedelta(minutes=10), step_since=at(20))
    assert ok.next == "advance"


def test_a_burst_without_a_baseline_is_left_out_of_the_absolute_limits() -> None:
    earlier, base = [(300, 3)] * 10, [(300, 3)] * 10
    burst = earlier + [(600, 6)] * 4 + [(600, 300)] + [(600, 6)] * 5  # one minute at 50% at 100%
    v = analysis.judge(rule(), reading("cand", burst), reading("blue", base), timedelta(minutes=10), step_since=at(10))
    assert v.next == "advance" and v.note is not None and "1 burst minute(s) without a baseline" in v.note
    # failing every request from the first minute at 100% (after passing the earlier steps) cannot be told from
    # an outage for three minutes; the fourth rolls it back
    failing = earlier + [(600, 600)] * 4
    three = reading("cand", failing[:13])
    f = analysis.judge(rule(), three, reading("blue", base), timedelta(minutes=3), step_since=at(10))
    assert f.next == "wait"
    f = analysis.judge(rule(), reading("cand", failing), reading("blue", base), timedelta(minutes=4), step_since=at(10))
    assert f.next == "rollback"


HOUR = [(60, 1)] * 36 + [(60, 0)] * 24  # the baseline's hour before the rollout: 1%


def test_the_last_step_counts_the_candidate_s_earlier_steps_against_the_baseline_s_hour() -> None:
    # 60 requests a minute: a candidate failing 5% at 10% and 50% (3 of 60, 15 of 300); at 100% 15 of 600 alone
    # (2.5%, p=0.003 against 1%) is not beyond the step's level; with its earlier steps' minutes, 33 of 960 is
    earlier = [(6, 1)] * 3 + [(6, 0)] * 7 + [(30, 1)] * 5 + [(30, 2)] * 5
    base = [(54, 1), (54, 0)] * 5 + [(30, 0)] * 7 + [(30, 1)] * 3
    step = [(60, 2)] * 5 + [(60, 1)] * 5
    cand, blue = reading("cand", earlier + step), reading("blue", base, history=HOUR)
    v = analysis.judge(rule(), cand, blue, timedelta(minutes=10), step_since=at(20))
    assert v.next == "rollback" and v.test is not None and v.test.startswith("history-")
    assert v.comparison is not None and (v.comparison["minutes"], v.comparison["observed"]) == (30, 33)
    assert v.candidate.served == 600  # the step's own counts, as the absolute limits judge them
    assert "the candidate's 33 failure(s) in 30 minute(s) of the rollout against 10 expected" in v.why
    assert v.p_value is not None and v.p_value < v.alpha < 0.003


def test_a_minute_above_the_limit_by_chance_is_not_a_burst_at_the_last_step() -> None:
    # 8 failures of 66 (12%) against the candidate's 2.9% before: beyond chance, but not above max_error_rate 5%
    # beyond doubt (p=0.017): a rate that varies from minute to minute, kept in the limits and the comparison
    earlier, base = [(6, 0)] * 10 + [(30, 1)] * 10, [(54, 1)] * 10 + [(30, 0)] * 10
    cand = reading("cand", earlier + [(66, 2)] * 9 + [(66, 8)])
    v = analysis.judge(rule(), cand, reading("blue", base, history=HOUR), timedelta(minutes=10), step_since=at(20))
    assert v.minutes[-1] == (at(29), 66, 8, 0, 0, None) and "burst" not in (v.note or "")
    outage = reading("cand", earlier + [(66, 2)] * 9 + [(66, 30)])  # an outage's 45% is one
    v = analysis.judge(rule(), outage, reading("blue", base, history=HOUR), timedelta(minutes=10), step_since=at(20))
    assert v.minutes[-1][-1] == "no_baseline" and "1 burst minute(s) without a baseline" in (v.note or "")


def test_a_slower_candidate_is_rolled_back_on_its_per_minute_p95s_and_one_slow_minute_is_not_enough() -> None:
    base = reading("blue", [(540, 5)] * 10, p95=[40.0] * 10)
    slow = reading("cand", [(60, 0)] * 10, p95=[80.0 + i for i in range(10)])
    v = analysis.judge(rule(), slow, base, timedelta(minutes=10))
    assert v.next == "rollback" and v.latency_p is not None and v.latency_p < 1e-4 and "Mann-Whitney" in v.why
    spike = reading("cand", [(60, 0)] * 10, p95=[40.0] * 9 + [400.0])  # one minute: window p95 76 ms, 1.9x
    w = analysis.judge(rule(), spike, base, timedelta(minutes=10))
    assert w.latency_ratio is not None and w.latency_ratio > 1.5
    assert w.next == "advance" and w.latency_p is not None and w.latency_p > 0.01


def test_the_variation_of_the_baseline_s_minutes_widens_the_comparison() -> None:
    steady = judge([(600, 9)] * 10, [(5400, 54)] * 10)
    varying = judge([(600, 9)] * 10, [(5400, f) for f in (20, 90, 30, 100, 25, 80, 35, 95, 30, 35)])
    assert steady.comparison is not None and varying.comparison is not None
    assert varying.comparison["variation"] > steady.comparison["variation"]
    assert varying.comparison["inflated"] > varying.comparison["variance"]


@pytest.mark.parametrize("minutes", [1, 5, 10])
def test_every_verdict_records_its_minutes(minutes: int) -> None:
    v = judge([(60, 1)] * minutes, [(540, 5)] * minutes)
    got = v.as_dict()
    assert len(got["minutes"]) == minutes and got["minutes"][0] == (at(0), 60, 1, 540, 5, None)
    assert set(got["comparison"]) >= {"p_value", "test", "observed", "expected", "variance", "variation"}


def test_a_baseline_quiet_by_chance_in_the_step_does_not_roll_back_a_candidate_its_hour_before_explains() -> None:
    # 6,000 a minute at 10%: the baseline happens to fail 0.56% in the step's minutes, the candidate 1.08%; in
    # the hour before the rollout the baseline failed 0.58% and 1.25% minute after minute (a rate that varies)
    cand, base = [(600, 7), (600, 6)] * 5, [(5400, 30)] * 10
    hour = [(6000, 35), (6000, 75)] * 30

    alone = analysis.judge(rule(), reading("cand", cand), reading("blue", base), timedelta(minutes=10))
    v = analysis.judge(rule(), reading("cand", cand), reading("blue", base, history=hour), timedelta(minutes=10))
    worse = analysis.judge(
        rule(), reading("cand", [(600, 8)] * 10), reading("blue", base, history=hour), timedelta(minutes=10)
    )

    assert alone.next == "rollback"  # the step's ten quiet minutes alone: a steady 0.56%, and the candidate above it
    assert (v.status, v.next) == ("healthy", "advance")
    assert v.comparison is not None and v.comparison["reference"] == 70 and v.comparison["variation"] > 0.1
    assert v.comparison["calm"] == pytest.approx((3300 + 300) / (360000 + 54000))
    assert "the baseline's 60 minute(s) before the rollout (3300 failure(s) of 360000)" in (v.note or "")
    assert worse.next == "rollback"  # a candidate failing 1.33% is still worse than that


def test_the_baseline_s_failing_minutes_before_the_rollout_are_left_out_of_its_calm_rate() -> None:
    hour = [(6000, 60)] * 58 + [(6000, 3000), (6000, 2400)]  # an outage in its last two minutes
    v = analysis.judge(
        rule(),
        reading("cand", [(600, 6)] * 10),
        reading("blue", [(5400, 54)] * 10, history=hour),
        timedelta(minutes=10),
    )
    assert v.comparison is not None and v.comparison["reference"] == 68
    assert v.comparison["calm"] == pytest.approx(0.01) and v.next == "advance"
