"""The smoke test's verdict, as a pure rule (handlers/rollout/smoke.py): what fails a request and what
the verdict says, never the bodies."""

from __future__ import annotations

import json
from typing import Any

from handlers.rollout.smoke import Scored, judge
from handlers.rollout_rules import SmokeRule


def rule(**keys: Any) -> SmokeRule:
    return SmokeRule.model_validate({"requests": [{"x": 1}], **keys})


def problem(r: SmokeRule, answer: Scored, champion: Scored | None = None) -> str | None:
    verdict = judge(r, "cand", [answer], "blue" if champion else None, [champion] if champion else None)
    row = verdict.details["answers"][0]
    assert verdict.passed == ("problem" not in row)
    return row.get("problem")


def test_a_timeout_is_a_failure_that_says_so() -> None:
    assert problem(rule(), Scored(None, error="no answer within 10s")) == "no answer: no answer within 10s"


def test_an_answer_that_is_not_json_fails() -> None:
    assert problem(rule(), Scored(200, None, error="the answer is not JSON")) == "the answer is not JSON"


def test_another_expected_status_is_honoured() -> None:
    assert problem(rule(status=201), Scored(201, {})) is None
    assert problem(rule(status=201), Scored(200, {})) == "status 200, expected 201"


def test_labels_and_shapes_must_equal_the_champion_s() -> None:
    compare = rule(champion={"field": "label", "abs_tolerance": 1})
    assert problem(compare, Scored(200, {"label": "cat"}), Scored(200, {"label": "cat"})) is None
    assert problem(compare, Scored(200, {"label": "cat"}), Scored(200, {"label": "dog"})) == (
        "has another label at /label than the champion's"
    )
    assert problem(compare, Scored(200, {"label": [1, 2]}), Scored(200, {"label": [1]})) == (
        "has 2 values at /label, the champion's 1"
    )
    assert problem(compare, Scored(200, {"label": 1}), Scored(200, {"label": "1"})) == (
        "has a int at /label where the champion's has a str"
    )
    assert problem(compare, Scored(200, {"other": 1}), Scored(200, {"label": 1})) == "the answer has no label"


def test_a_champion_that_fails_the_request_fails_the_smoke_test_asking_to_check_the_sample() -> None:
    compare = rule(champion={})
    assert problem(compare, Scored(200, {"p": 1}), Scored(424, None, error="the model answered 500")) == (
        "the champion answered it with the model answered 500, so the answers cannot be compared; check the "
        "sample request"
    )


def test_a_nan_never_passes_a_tolerance() -> None:
    compare = rule(champion={"abs_tolerance": 100})
    assert problem(compare, Scored(200, [float("nan")]), Scored(200, [1.0])) is not None


def test_the_verdict_holds_no_body_and_passes_only_when_every_request_passed() -> None:
    r = SmokeRule.model_validate({"requests": [{"secret": "s1"}, {"secret": "s2"}]})
    verdict = judge(r, "cand", [Scored(200, {"secret": "a1"}, 3.0), Scored(500, {"secret": "a2"}, 5.0)])
    assert not verdict.passed and verdict.details["failed"] == [1]
    assert verdict.why == "smoke test failed: 1 of 2 request(s); request 1: status 500, expected 200"
    assert "secret" not in json.dumps(verdict.details)
    passed = judge(r, "cand", [Scored(200, {}, 3.0), Scored(200, {}, 5.0)])
    assert passed.passed and passed.why == "smoke test passed: 2 request(s) answered with status 200 (slowest 5 ms)"
