"""Both health sources, end to end: the real ``LogsQueryClient`` against the fake Log Analytics API
(rows of AmlOnlineEndpointTrafficLog) and the real ``MetricsClient`` against the fake metrics batch
API (per-minute platform metrics), read through their adapters and judged by
:func:`handlers.analysis.judge`. The same scenarios run against each source."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from handlers import analysis
from tests.health_world import BASE, CAND, ENDPOINT, NOW, RULE, STARTED, LogsWorld, MetricsWorld, World


@pytest.fixture(params=["logs", "metrics"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    built: World = LogsWorld() if request.param == "logs" else MetricsWorld()
    yield built
    assert built.fake.unexpected == []


# --------------------------------------------------------------------------- the scenarios, on each source


def test_424_and_408_count_as_failures(world: World) -> None:
    world.serve(CAND, minutes=1, ok=10, e424=60, e408=30)  # the reading: 0 errors, healthy, advance
    world.serve(BASE, ok=540, e5xx=5)

    cand, base = world.read()

    counts = cand.counts(RULE.health.failure_codes)
    assert (counts.requests, counts.failures, counts.by_class["424"], counts.by_class["408"]) == (100, 90, 60, 30)
    assert base is not None and base.counts().failures == 50 and base.source == world.name
    verdict = world.judge()
    assert (verdict.status, verdict.next) == ("unhealthy", "rollback")


def test_a_candidate_worse_than_its_baseline_but_under_the_absolute_limit_is_rolled_back(world: World) -> None:
    world.serve(CAND, ok=58, e424=1, e408=1)  # 3.3%: under max_error_rate 5%
    world.serve(BASE, ok=534, e5xx=3, e424=3)  # 1.1%

    verdict = world.judge()

    assert verdict.candidate.failure_rate is not None and verdict.candidate.failure_rate < 0.05
    assert (verdict.next, verdict.final) == ("rollback", True) and "worse than the baseline" in verdict.why
    assert verdict.p_value is not None and verdict.p_value < verdict.alpha
    assert verdict.source == world.name and CAND in verdict.request and BASE in verdict.request


def test_a_candidate_as_good_as_a_4_percent_baseline_advances(world: World) -> None:
    world.serve(CAND, ok=58, e424=1, e5xx=1)  # 3.3%
    world.serve(BASE, ok=518, e424=12, e408=5, e5xx=5)  # 4.1%

    verdict = world.judge()

    assert (verdict.status, verdict.next) == ("healthy", "advance")
    assert verdict.baseline is not None and verdict.baseline.failures == 220 and verdict.baseline.served == 5400


def test_a_step_where_every_request_failed_is_rolled_back_before_min_requests(world: World) -> None:
    world.serve(CAND, minutes=1, e424=4, e408=2, e5xx=1)  # 7 requests, all failed, in the first minute
    world.serve(BASE, minutes=1, ok=540)

    verdict = world.judge(now=STARTED + world.lag + timedelta(minutes=2))  # two minutes into the step

    assert verdict.candidate.served == 7 < RULE.health.min_requests
    assert (verdict.next, verdict.final) == (
        "rollback",
        False,
    ) and "every one of its 7 request(s) failed" in verdict.why


def test_throttled_requests_are_counted_apart(world: World) -> None:
    world.serve(CAND, ok=50, throttled=10)
    world.serve(BASE, ok=540)
    cand, _ = world.read()
    counts = cand.counts()
    assert (counts.throttled, counts.failures, counts.served) == (100, 0, 500)


def test_the_window_ends_the_source_s_lag_before_now(world: World) -> None:
    world.serve(CAND, ok=60)
    cand, _ = world.read(NOW)
    lag = {"logs": timedelta(minutes=5), "metrics": timedelta(minutes=3)}[world.name]
    assert world.lag == lag and datetime.fromisoformat(cand.until) == NOW - lag
    assert cand.requests == (480 if world.name == "logs" else 600)  # the logs' last 2 minutes are not in yet


def test_a_latency_far_above_the_baseline_s_is_rolled_back(world: World) -> None:
    world.serve(CAND, ok=60, p95=120)
    world.serve(BASE, ok=540, p95=40)
    verdict = world.judge()
    assert verdict.next == "rollback" and verdict.latency_ratio == pytest.approx(3.0)


# --------------------------------------------------------------------------- what each source reads


def test_each_source_gives_the_minutes_of_both_deployments_in_the_same_minutes(world: World) -> None:
    world.serve(CAND, minutes=3, ok=9, e424=1, p95=50)
    world.serve(CAND, minutes=1, start=3, ok=2, e5xx=8, p95=90)  # a minute both deployments fail in
    world.serve(BASE, minutes=3, ok=90, p95=40)
    world.serve(BASE, minutes=1, start=3, ok=30, e5xx=60, p95=80)

    cand, base = world.read()

    assert base is not None
    first = datetime.fromisoformat(cand.since)
    expected = [(first + timedelta(minutes=m)).isoformat() for m in range(4)]
    assert [datetime.fromisoformat(m.at).isoformat() for m in cand.minutes] == expected
    assert [m.at for m in base.minutes] == [m.at for m in cand.minutes]  # the same minutes, paired
    assert [m.counted() for m in cand.minutes] == [(10, 1), (10, 1), (10, 1), (10, 8)]
    assert [m.counted() for m in base.minutes] == [(90, 0), (90, 0), (90, 0), (90, 60)]
    assert [m.p95_ms for m in cand.minutes] == [50, 50, 50, 90]
    assert sum(m.counted()[0] for m in cand.minutes) == cand.counts().served == 40  # the window is their sum


def test_a_spike_both_deployments_fail_in_holds_the_step_through_either_source(world: World) -> None:
    world.serve(CAND, minutes=3, ok=60)
    world.serve(CAND, minutes=1, start=3, ok=30, e5xx=30)  # a dependency down: half of everything fails
    world.serve(BASE, minutes=3, ok=535, e5xx=5)
    world.serve(BASE, minutes=1, start=3, ok=270, e5xx=270)

    verdict = world.judge(STARTED + timedelta(minutes=4) + world.lag)  # mid-bake, the spike the latest minute

    assert (verdict.status, verdict.next) == ("endpoint_failing", "hold")
    assert "baseline 270 failure(s) of 540" in verdict.why and "the endpoint's problem" in verdict.why
    assert verdict.minutes[-1][1:] == (60, 30, 540, 270, "shared")  # the minute the record keeps


def test_two_failures_at_a_few_requests_a_minute_do_not_roll_back_through_either_source(world: World) -> None:
    world.serve(CAND, minutes=8, ok=2)
    world.serve(CAND, minutes=2, start=8, ok=1, e424=1)  # 2 of 20 failed: 10%, twice max_error_rate
    world.serve(BASE, minutes=10, ok=18)

    verdict = world.judge()

    assert verdict.candidate.failures == 2 and verdict.final
    assert verdict.next != "rollback", verdict.why


def test_each_source_reads_the_baseline_s_hour_before_the_rollout_as_its_history(world: World) -> None:
    world.serve(BASE, minutes=60, start=-60, ok=588, e5xx=12)  # the hour before: the baseline alone, 2%
    world.serve(CAND, minutes=5, start=-5, ok=5, e424=5)  # the candidate's requests before the step (a mirror)
    world.serve(CAND, ok=59, e5xx=1)
    world.serve(BASE, ok=537, e5xx=3)
    since, until = analysis.window(RULE.health, STARTED, STARTED + RULE.bake + world.lag, world.name)

    cand, base = world.source.read(ENDPOINT, CAND, BASE, since, until, before=since - timedelta(hours=1))

    assert base is not None and len(base.history) == 60
    assert {m.counted() for m in base.history} == {(600, 12)} and base.history[-1].at < base.minutes[0].at
    assert (base.counts().served, base.counts().failures) == (5400, 30)  # the window's counts are the window's
    assert cand.history == () and (cand.counts().served, cand.counts().failures) == (600, 10)  # not its earlier ones
    verdict = analysis.judge(RULE, cand, base, until - since)
    assert verdict.comparison is not None and verdict.comparison["reference"] == 70  # 60 before, 10 in the step
    assert verdict.comparison["calm"] == pytest.approx((720 + 30) / (36000 + 5400))
    assert "the baseline's 60 minute(s) before the rollout (720 failure(s) of 36000)" in (verdict.note or "")
    assert world.source.read(ENDPOINT, CAND, BASE, since, until)[1].history == ()  # none unless asked  # type: ignore[union-attr]
