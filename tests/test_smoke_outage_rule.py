"""The smoke test told an outage from a broken candidate, as pure rules (handlers/rollout/smoke_outage.py):
which answers an outage gives, which failed requests the live deployment is asked about, and what its
answers decide (defer, bounded by ``smoke.max_wait``, or roll back), case by case; and a smoke test whose
requests the endpoint refused (401) or throttled (429), bounded by the same ``max_wait`` on the same clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.rollout.smoke import Scored, SmokeVerdict, judge
from handlers.rollout.smoke_outage import (
    OUTAGE,
    decide,
    first_deferral,
    live_calls,
    outage_class,
    refused,
    suspects,
    to_ask,
)
from handlers.rollout_rules import MAX_SMOKE_TIME, SmokeRule

T0 = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
TIMEOUT = Scored(None, ms=10_000.0, error="no answer within 10s (ServiceResponseTimeoutError)", unanswered=True)
DOWNSTREAM = Scored(424, {"message": "x"}, 12.0, "the model answered 503", model_status=503)
HEALTHY = Scored(200, {"predictions": [1.0]}, 8.0)


def rule(**keys: Any) -> SmokeRule:
    return SmokeRule.model_validate({"requests": [{"x": 1}, {"x": 2}], **keys})


def failed(r: SmokeRule, *answers: Scored, champion: list[Scored] | None = None) -> SmokeVerdict:
    verdict = judge(r, "green", list(answers), "blue" if champion else None, champion)
    assert not verdict.passed
    return verdict


@pytest.mark.parametrize(
    ("answer", "outage"),
    [
        (TIMEOUT, True),  # sent, nothing back in time
        (Scored(None, error="the connection failed within 10s (ServiceRequestError)", unanswered=True), True),
        (Scored(408), True),  # the deployment's request timeout: a downstream that hangs
        (Scored(500), True),  # "Azure Machine Learning-provisioned infrastructure is failing"
        (Scored(502), True),
        (Scored(503), True),
        (Scored(504), True),
        (Scored(424, model_status=500), True),  # the scoring script's downstream is down
        (Scored(424, model_status=503), True),
        (Scored(424, model_status=400), False),  # the script refused the request: the candidate's schema
        (Scored(424), False),  # a model error that does not say its status
        (Scored(400), False),
        (Scored(404), False),  # no deployment of that name can take it: not provisioned
        (Scored(413), False),
        (Scored(422), False),
        (Scored(200, {"predictions": ["high"]}), False),  # a wrong answer
        (Scored(200, None, error="the answer is not JSON"), False),
        # an endpoint the service does not send its token to: nothing was sent, no outage can explain it
        (Scored(None, error="endpoint e authenticates callers with key ..."), False),
    ],
)
def test_which_answers_an_outage_gives(answer: Scored, outage: bool) -> None:
    assert outage_class(answer) is outage


def test_only_failures_an_outage_can_explain_are_taken_to_the_live_deployment() -> None:
    r = rule()
    assert suspects(r, failed(r, DOWNSTREAM, TIMEOUT), [DOWNSTREAM, TIMEOUT]) == [0, 1]
    assert suspects(r, failed(r, HEALTHY, Scored(503)), [HEALTHY, Scored(503)]) == [1]
    # one failure of the candidate's own (a 400) and the verdict stands, whatever the other
    assert suspects(r, failed(r, Scored(400), Scored(503)), [Scored(400), Scored(503)]) is None
    assert suspects(r, failed(r, Scored(404), Scored(404)), [Scored(404), Scored(404)]) is None


def test_a_comparison_the_champion_s_outage_made_impossible_is_taken_to_it_too() -> None:
    r = rule(champion={"field": "predictions"})
    mine = [HEALTHY, HEALTHY]
    assert suspects(r, failed(r, *mine, champion=[Scored(503), HEALTHY]), mine, [Scored(503), HEALTHY]) == [0]
    wrong = [Scored(200, {"predictions": [2.0]}), HEALTHY]  # the answers differ: the candidate's own
    assert suspects(r, failed(r, *wrong, champion=[HEALTHY, HEALTHY]), wrong, [HEALTHY, HEALTHY]) is None
    refused = [Scored(400), HEALTHY]  # the champion refuses the sample: check the sample, not an outage
    assert suspects(r, failed(r, *mine, champion=refused), mine, refused) is None


def test_the_live_deployment_is_asked_only_within_the_pass_s_five_minutes() -> None:
    assert live_calls(rule(), MAX_SMOKE_TIME) == 28  # 2 requests of 10s: 280s left
    full = SmokeRule.model_validate({"requests": [{}] * 20, "timeout": "15s"})
    assert live_calls(full, MAX_SMOKE_TIME) == 0  # 20 of 15s fill the 5 minutes
    half = SmokeRule.model_validate({"requests": [{}] * 20, "timeout": "10s"})
    assert to_ask(half, list(range(20)), MAX_SMOKE_TIME) == list(range(10))
    compared = SmokeRule.model_validate({"requests": [{}] * 10, "timeout": "15s", "champion": {}})
    assert live_calls(compared, MAX_SMOKE_TIME) == 0  # its champion's answers are at hand: none needed


def outcome(r: SmokeRule, live: dict[int, Scored], waited: dict[str, Any] | None = None, now: datetime = T0) -> Any:
    verdict = failed(r, DOWNSTREAM, TIMEOUT)
    return decide(r, verdict, [DOWNSTREAM, TIMEOUT], "blue", live, waited, now)


def test_the_live_deployment_failing_them_too_defers_the_smoke_test_and_says_why() -> None:
    got = outcome(rule(), {0: Scored(503), 1: Scored(424, model_status=500)})
    assert got.defer
    assert got.waited == {"since": "2026-12-07T04:00:00.000Z", "times": 1, "last": "2026-12-07T04:00:00.000Z",
                          "until": "2026-12-07T05:00:00.000Z"}  # fmt: skip
    assert got.why == (
        f"smoke test deferred: {OUTAGE} (request 0: candidate status 424 (model 503), blue status 503; request 1: "
        "candidate no answer, blue status 424 (model 500)); tried again on the next pass, rolled back if it has not "
        "cleared by 2026-12-07T05:00:00.000Z (smoke.max_wait 1h)"
    )
    assert got.details["live"]["asked"][0]["live_status"] == 503 and got.details["outage"] == got.waited


def test_a_deferral_keeps_its_first_time_and_counts() -> None:
    first = outcome(rule(), {0: Scored(503), 1: Scored(503)}).waited
    later = outcome(rule(), {0: Scored(503), 1: Scored(503)}, first, T0 + timedelta(minutes=20))
    assert later.defer and later.waited["since"] == first["since"] and later.waited["times"] == 2


def test_an_outage_that_never_clears_within_max_wait_rolls_the_candidate_back() -> None:
    waited = {"since": "2026-12-07T04:00:00.000Z", "times": 11}
    got = outcome(rule(), {0: Scored(503), 1: Scored(503)}, waited, T0 + timedelta(hours=1))
    assert not got.defer
    assert (
        "the outage never cleared: blue failed them too on each of 12 tries since 2026-12-07T04:00:00.000Z" in got.why
    )
    assert got.why.endswith("smoke.max_wait 1h")
    assert outcome(rule(), {0: Scored(503), 1: Scored(503)}, waited, T0 + timedelta(minutes=59)).defer


def test_a_broken_candidate_cannot_outwait_the_bound_whatever_it_answers() -> None:
    """Each pass the live deployment still fails, the deferral's first time stays; the bound is from it."""
    waited = None
    for minutes in range(0, 24 * 60, 5):
        got = outcome(rule(max_wait="3h"), {0: Scored(502), 1: Scored(504)}, waited, T0 + timedelta(minutes=minutes))
        if not got.defer:
            break
        waited = got.waited
    assert not got.defer and minutes == 180


def test_max_wait_0s_rolls_back_at_once_saying_it_was_an_outage() -> None:
    got = outcome(rule(max_wait="0s"), {0: Scored(503), 1: Scored(503)})
    assert not got.defer and f"{OUTAGE} (" in got.why and got.why.endswith("smoke.max_wait is 0s: no waiting")


def test_the_live_deployment_answering_makes_it_the_candidate_s_failure_showing_both_statuses() -> None:
    got = outcome(rule(), {0: HEALTHY, 1: Scored(503)})
    assert not got.defer and got.waited is None
    assert got.why.endswith(
        "; the live deployment blue answered them, so the failure is the candidate's (request 0: candidate status 424 "
        "(model 503), blue status 200)"
    )


def test_without_a_live_deployment_or_time_to_ask_it_the_candidate_is_rolled_back_saying_so() -> None:
    r = rule()
    verdict = failed(r, DOWNSTREAM, TIMEOUT)
    alone = decide(r, verdict, [DOWNSTREAM, TIMEOUT], None, {}, None, T0)
    assert not alone.defer and alone.why.endswith("; no live deployment to ask whether it fails them too")
    unasked = decide(r, verdict, [DOWNSTREAM, TIMEOUT], "blue", {}, None, T0)
    assert not unasked.defer and "blue was not asked whether it fails them too" in unasked.why


def test_no_request_or_answer_body_is_in_what_it_decides() -> None:
    secret = Scored(503, {"ssn": "123-45-6789"}, 3.0)
    got = outcome(rule(), {0: secret, 1: secret})
    assert "ssn" not in json.dumps(got.details) + got.why and "123-45" not in json.dumps(got.details)


UNAUTHORIZED = (
    "endpoint e refused the service's identity (401) when invoking deployment green: grant it "
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action on the workspace (the service's "
    "custom role, infra/modules/workspace-access.bicep, or AzureML Data Scientist)"
)
THROTTLED = "endpoint e throttled the smoke test's request to deployment green (429); it is sent again on the next pass"


def at(minutes: int) -> str:
    return f"2026-12-07T{4 + minutes // 60:02d}:{minutes % 60:02d}:00.000Z"


def test_the_first_deferral_of_any_kind_starts_the_one_clock() -> None:
    assert first_deferral({}) is None
    assert first_deferral({"deferred": {"since": at(5)}}) == T0 + timedelta(minutes=5)
    assert first_deferral({"outage": {"since": at(20)}, "deferred": {"since": at(5)}}) == T0 + timedelta(minutes=5)
    assert first_deferral({"outage": {"since": at(5)}, "deferred": {"since": at(20)}}) == T0 + timedelta(minutes=5)
    assert first_deferral({"outage": "not a deferral", "deferred": {"times": 1}}) is None


@pytest.mark.parametrize("error", [UNAUTHORIZED, THROTTLED])
def test_a_refusal_or_throttling_defers_the_smoke_test_until_max_wait_from_its_first_deferral(error: str) -> None:
    got = refused(rule(max_wait="30m"), {}, error, T0)
    assert got.defer and got.why == error
    assert got.waited == {"why": error, "since": at(0), "times": 1, "last": at(0), "until": at(30)}
    later = refused(rule(max_wait="30m"), {"deferred": got.waited}, error, T0 + timedelta(minutes=29))
    assert later.defer and later.waited == {**got.waited, "times": 2, "last": at(29)}  # since never moved


@pytest.mark.parametrize("error", [UNAUTHORIZED, THROTTLED])
def test_a_refusal_or_throttling_that_never_clears_within_max_wait_rolls_the_candidate_back(error: str) -> None:
    kept = {"why": error, "since": at(0), "times": 6, "last": at(25), "until": at(30)}
    got = refused(rule(max_wait="30m"), {"deferred": kept}, error, T0 + timedelta(minutes=30))
    assert not got.defer and got.waited is None
    assert got.why == (
        f"smoke test never judged: deferred since {at(0)} (30m, 7 tries), its requests still not taken: {error}; "
        "smoke.max_wait 30m"
    )
    assert got.details == {"deferred": {**kept, "times": 7, "last": at(30)}}


def test_a_refusal_after_an_outage_is_bounded_from_the_outage_s_first_deferral() -> None:
    outage = {"since": at(0), "times": 3, "last": at(10), "until": at(60)}
    still = refused(rule(), {"outage": outage}, THROTTLED, T0 + timedelta(minutes=40))
    assert still.defer and still.waited is not None and still.waited["until"] == at(60)
    assert still.waited["since"] == at(40)  # its own since; the clock is the outage's
    got = refused(rule(), {"outage": outage, "deferred": still.waited}, THROTTLED, T0 + timedelta(minutes=60))
    assert not got.defer and got.why.startswith(f"smoke test never judged: deferred since {at(0)} (1h, 2 tries)")
    assert got.details["outage"] == outage  # the record says it waited out an outage first


def test_an_outage_after_a_refusal_is_bounded_from_the_refusal_s_first_deferral() -> None:
    first = T0 - timedelta(minutes=50)
    waiting = outcome(rule(), {0: Scored(503), 1: Scored(503)}).waited
    assert waiting is not None
    got = decide(rule(), failed(rule(), DOWNSTREAM, TIMEOUT), [DOWNSTREAM, TIMEOUT], "blue",
                 {0: Scored(503), 1: Scored(503)}, None, T0, first)  # fmt: skip
    assert got.defer and got.waited == {**waiting, "until": "2026-12-07T04:10:00.000Z"}
    gone = decide(rule(), failed(rule(), DOWNSTREAM, TIMEOUT), [DOWNSTREAM, TIMEOUT], "blue",
                  {0: Scored(503), 1: Scored(503)}, got.waited, T0 + timedelta(minutes=10), first)  # fmt: skip
    assert not gone.defer
    assert f"on each of 2 tries since {at(0)}, deferred first at 2026-12-07T03:10:00.000Z (" in gone.why


@pytest.mark.parametrize("error", [UNAUTHORIZED, THROTTLED])
def test_max_wait_0s_rolls_a_refused_or_throttled_smoke_test_back_at_once(error: str) -> None:
    got = refused(rule(max_wait="0s"), {}, error, T0)
    assert not got.defer and got.why == f"smoke test not sent: {error}; smoke.max_wait is 0s: no waiting"
