"""A smoke test failed by an outage, told from a broken candidate (docs/rollouts.md, "An outage during
the smoke test"): pure rules, no I/O, the time an argument.

A dependency that every model's scoring script calls, or the endpoint's own infrastructure, can fail
every deployment at once; a smoke test sent then fails a healthy candidate. The rollout judge on
traffic tells the two apart by comparing with the baseline in the same minutes; the smoke test does
the same with the requests that failed: each is sent to the live deployment too (the champion's
answers are used when the policy compares them already), and

- only when every request failed on an answer an outage gives (:func:`outage_class`) is the live
  deployment asked (:func:`suspects`, :func:`to_ask`): a 4xx, a wrong answer, a 404 (not provisioned)
  are the candidate's own and roll it back at once, as before;
- the live deployment failing every request asked on such an answer too is an outage, not the
  candidate: the smoke test is **deferred** (:func:`decide`), tried again on the next pass, for at most
  ``smoke.max_wait`` after the first deferral; past it the candidate is rolled back saying the outage
  never cleared. The first deferral's time is kept in the pending transition and never moved, so a
  candidate cannot stay deferred longer than that, whatever it answers;
- a smoke test whose requests could not be sent (the endpoint refusing the service's identity, 401, while a
  role assignment applies; or throttling, 429) is deferred too (:func:`refused`, ``details.deferred``), and
  bounded by the same ``smoke.max_wait``: past it the candidate is rolled back saying what it waited for
  and how long. One clock for a smoke test, whatever deferred it: :func:`first_deferral`, the earliest
  ``since`` of its outage and its refusal, so a candidate that alternates between the two (an endpoint
  throttling in an outage) cannot restart the wait;
- the live deployment answering a request the candidate failed makes it the candidate's failure:
  rolled back, the reason showing both statuses.

Only statuses are read and said; never a request or an answer body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers.records import from_iso, iso, span
from handlers.rollout.smoke import Scored, SmokeVerdict, problem

if TYPE_CHECKING:
    from handlers.rollout_rules import SmokeRule

# What an endpoint answers when something every deployment relies on fails (Azure ML docs, "Troubleshoot
# online endpoints", HTTP status codes): 408 the deployment's request timeout (a downstream that hangs), 500
# "Azure Machine Learning-provisioned infrastructure is failing", 502/503/504 a gateway's; a model's own
# failure is a 424, an outage only when its scoring script answered a 5xx (a downstream it calls is down).
OUTAGE_STATUSES = frozenset({408, 500, 502, 503, 504})
MODEL_ERROR = 424
OUTAGE = "the live deployment fails these requests too: an outage, not the candidate"
DEFERRED = "deferred"  # in a smoke transition's details: a refusal or throttling that deferred it (why, since, times)
WAITED = "outage"  # in a smoke transition's details: the outage it waits out (since, times)


def first_deferral(details: Mapping[str, Any]) -> datetime | None:
    """When the smoke test whose pending transition holds ``details`` was first deferred, of any kind (its
    outage's ``since`` or its refusal's, the earlier): where ``smoke.max_wait`` counts from. None: never."""
    kept = [details.get(WAITED), details.get(DEFERRED)]
    found = [from_iso(str(k["since"])) for k in kept if isinstance(k, Mapping) and k.get("since")]
    return min((t for t in found if t is not None), default=None)


def outage_class(answer: Scored) -> bool:
    """Whether ``answer`` is one a dependency outage gives every deployment alike: a request sent and not
    answered in time (or its connection failed), 408, 500, 502, 503, 504, or a 424 whose model status is
    a 5xx. A 4xx, a 424 of a model answering 4xx (or not saying), an answer in another shape and an
    endpoint the service does not send to are not."""
    if answer.status is None:
        return answer.unanswered
    if answer.status in OUTAGE_STATUSES:
        return True
    return answer.status == MODEL_ERROR and answer.model_status is not None and 500 <= answer.model_status <= 599


def said(answer: Scored) -> str:
    """An answer's status in words, for a reason: ``no answer``, ``status 503``, ``status 424 (model 500)``."""
    if answer.status is None:
        return "no answer"
    model = f" (model {answer.model_status})" if answer.status == MODEL_ERROR and answer.model_status else ""
    return f"status {answer.status}{model}"


def suspects(
    rule: SmokeRule,
    verdict: SmokeVerdict,
    answers: Sequence[Scored],
    champion_answers: Sequence[Scored] | None = None,
) -> list[int] | None:
    """The failed requests to ask the live deployment about, when each failed on an answer an outage
    gives: the candidate's own, or (the candidate's answer fine, the comparison failed) the champion's.
    None when one failed on the candidate's own account: the verdict stands."""
    failed = [int(i) for i in verdict.details.get("failed") or ()]
    for i in failed:
        if problem(rule, answers[i], None) is None:  # its own answer was fine: only the comparison failed
            theirs = champion_answers[i] if champion_answers is not None and i < len(champion_answers) else None
            if theirs is None or not outage_class(theirs):
                return None
        elif not outage_class(answers[i]):
            return None
    return failed or None


def live_calls(rule: SmokeRule, budget: timedelta) -> int:
    """How many requests the live deployment may be sent in the pass's smoke-test ``budget``, once the
    candidate's (and the champion's, when the policy compares) have taken theirs at their timeout."""
    sent = rule.count * (2 if rule.champion is not None else 1)
    left = budget - sent * rule.timeout
    return max(0, int(left.total_seconds() // rule.timeout.total_seconds()))


def to_ask(rule: SmokeRule, failed: Sequence[int], budget: timedelta) -> list[int]:
    """Which of the ``failed`` requests to send to the live deployment (when the policy does not compare
    with the champion, whose answers to them are at hand otherwise): the first that fit in the ``budget``."""
    return list(failed[: live_calls(rule, budget)])


@dataclass(frozen=True)
class Outcome:
    """What a failed smoke test comes to: ``defer`` (an outage: the smoke test is tried again on the next
    pass, ``waited`` the deferral to keep in the pending transition) or a rollback; ``why`` in words;
    ``details``: the verdict's, with the live deployment's statuses and the deferrals (never a body)."""

    defer: bool
    why: str
    details: dict[str, Any] = field(default_factory=dict)
    waited: dict[str, Any] | None = None


def decide(
    rule: SmokeRule,
    verdict: SmokeVerdict,
    answers: Sequence[Scored],
    live: str | None,
    asked: Mapping[int, Scored],
    waited: Mapping[str, Any] | None,
    now: datetime,
    first: datetime | None = None,
) -> Outcome:
    """The failed ``verdict``, whose failed requests were all outage-class (:func:`suspects`), judged with
    the live deployment's answers to them (``asked``: by request; ``live`` None: no deployment has
    traffic), the deferrals so far (``waited``: ``since``, ``times``) and ``rule.max_wait``, counted from
    ``first`` (:func:`first_deferral`: a 401 or 429 that deferred it before; ``waited``'s ``since`` when None)."""
    rows = [
        {
            "request": i,
            "candidate": said(answers[i]),
            "live": said(a),
            "live_status": a.status,
            "live_ms": round(a.ms, 1),
        }
        for i, a in sorted(asked.items())
    ]
    details: dict[str, Any] = {**verdict.details, "live": {"deployment": live, "asked": rows}}
    if waited:
        details[WAITED] = dict(waited)
    if live is None:
        return Outcome(False, f"{verdict.why}; no live deployment to ask whether it fails them too", details)
    if not asked:
        why = (
            f"{verdict.why}; {live} was not asked whether it fails them too: {rule.count} request(s) at their "
            "timeout leave no time for it in one reconciler pass (send fewer requests or set a shorter timeout)"
        )
        return Outcome(False, why, details)
    answered = [r for i, r in zip(sorted(asked), rows, strict=True) if not outage_class(asked[i])]
    if answered:
        both = "; ".join(f"request {r['request']}: candidate {r['candidate']}, {live} {r['live']}" for r in answered)
        return Outcome(
            False,
            f"{verdict.why}; the live deployment {live} answered them, so the failure is the candidate's ({both})",
            details,
        )
    both = "; ".join(f"request {r['request']}: candidate {r['candidate']}, {live} {r['live']}" for r in rows)
    since = from_iso(str(waited["since"])) if waited and waited.get("since") else None
    times = int((waited or {}).get("times") or 0)
    if rule.max_wait <= timedelta(0):
        return Outcome(False, f"{verdict.why}; {OUTAGE} ({both}), and smoke.max_wait is 0s: no waiting", details)
    clock = min(t for t in (since, first) if t is not None) if since or first else None
    if clock is not None and now - clock >= rule.max_wait:
        before = f", deferred first at {iso(clock)}" if clock != since else ""
        why = (
            f"{verdict.why}; the outage never cleared: {live} failed them too on each of {times + 1} tries since "
            f"{iso(since or now)}{before} ({both}), smoke.max_wait {span(rule.max_wait)}"
        )
        return Outcome(False, why, details)
    start = since or now
    kept = {"since": iso(start), "times": times + 1, "last": iso(now), "until": iso((clock or now) + rule.max_wait)}
    why = (
        f"smoke test deferred: {OUTAGE} ({both}); tried again on the next pass, rolled back if it has not "
        f"cleared by {kept['until']} (smoke.max_wait {span(rule.max_wait)})"
    )
    return Outcome(True, why, {**details, WAITED: kept}, kept)


def refused(rule: SmokeRule, details: Mapping[str, Any], error: str, now: datetime) -> Outcome:
    """A smoke test whose requests the endpoint did not take (``error``: its refusal of the service's identity,
    401, naming the action and the role; or its throttling, 429), its pending transition holding ``details``:
    deferred (``waited``, kept as ``details.deferred``: ``why``, ``since`` never moved, ``times``, ``last``,
    ``until``) until ``rule.max_wait`` has passed since its first deferral of any kind (:func:`first_deferral`),
    then rolled back saying what it waited for and how long; with ``max_wait`` 0s at once."""
    before = details.get(DEFERRED)
    before = before if isinstance(before, Mapping) else {}
    times = int(before.get("times") or 0) + 1
    clock = first_deferral(details) or now
    kept = {
        "why": error[:500],
        "since": str(before.get("since") or iso(now)),
        "times": times,
        "last": iso(now),
        "until": iso(clock + rule.max_wait),
    }
    outage = details.get(WAITED)
    said = {DEFERRED: kept, **({WAITED: dict(outage)} if isinstance(outage, Mapping) else {})}
    if rule.max_wait <= timedelta(0):
        return Outcome(False, f"smoke test not sent: {error[:500]}; smoke.max_wait is 0s: no waiting", said)
    if now - clock >= rule.max_wait:
        tries = tried(times)
        why = (
            f"smoke test never judged: deferred since {iso(clock)} ({span(now - clock)}, {tries}), its requests still "
            f"not taken: {error[:500]}; smoke.max_wait {span(rule.max_wait)}"
        )
        return Outcome(False, why, said)
    return Outcome(True, error[:500], said, kept)


def tried(times: int) -> str:
    """``times`` tries, in words ("1 try", "3 tries")."""
    return f"{times} tr{'y' if times == 1 else 'ies'}"
