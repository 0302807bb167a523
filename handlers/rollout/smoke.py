"""The smoke test of a candidate before it gets any traffic (``deploy.rollout.smoke``, docs/rollouts.md):
the port a deployment is invoked through (:class:`Scoring`, by deployment name, as the service's
identity), and the verdict on its answers (:func:`judge`), pure.

The executor sends the policy's sample requests (:meth:`handlers.rollout.effects.RolloutEffects.transition`,
a ``smoke`` transition) to the candidate and, when the policy compares, to the champion; the verdict says
which request failed and why, with the numbers (status, the schema's complaint, the difference from the
champion), and never the bodies: a request or an answer may carry personal data, so neither is logged
nor recorded, only where in the answer a problem is and the numbers there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from handlers.look import Verdict
    from handlers.rollout_rules import ChampionRule, RolloutRule, SmokeData, SmokeRule


@dataclass(frozen=True)
class Scored:
    """One answer of a deployment: ``status`` (None: no answer, ``error`` says why: a timeout, a
    refused connection, an endpoint the service cannot invoke), the JSON ``body`` (None when it is not
    JSON: ``error`` says so; never logged or recorded), how long it took (``ms``). ``unanswered``: the
    request was sent and nothing came back in time or the connection failed (not an endpoint the
    service would not send to); ``model_status``: with a 424, the status the model's scoring script
    answered (``ms-azureml-model-error-statuscode``), when the endpoint said it. Both are what
    :mod:`handlers.rollout.smoke_outage` tells an outage by."""

    status: int | None
    body: Any = None
    ms: float = 0.0
    error: str | None = None
    unanswered: bool = False
    model_status: int | None = None


class Scoring(Protocol):
    """Invoking one deployment of an online endpoint directly (its scoring URI with the
    ``azureml-model-deployment`` header), as the service's identity."""

    def score(self, endpoint: str, deployment: str, body: Any, timeout: float) -> Scored:
        """``deployment``'s answer to ``body`` within ``timeout`` seconds. A timeout or an endpoint the
        service cannot invoke is an answer without a status; raises PermanentError when the endpoint
        refuses the service's identity (a missing role), TransientError when the scoring URI cannot be
        read now."""
        ...

    def samples(self, data: SmokeData) -> list[Any]:
        """The sample requests kept in the data asset ``data`` names (its file's first ``data.count``
        JSON lines). Raises PermanentError naming the asset and the fix when they cannot be read (no
        such asset, not a file in a datastore, not JSON lines, the storage refusing the service's
        identity), TransientError when not now."""
        ...


@dataclass(frozen=True)
class SmokeVerdict:
    """``passed`` or not, ``why`` in words (the first failing request), and ``details``: the numbers of
    every request (status, ms, the problem), for the decision record."""

    passed: bool
    why: str
    details: dict[str, Any] = field(default_factory=dict)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _schema_problem(schema: dict[str, Any], body: Any) -> str | None:
    """Where ``body`` fails ``schema`` and which keyword of the schema (not the body's values)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(body))
    if error is None:
        return None
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    return f"the answer fails the response schema at {where}: {error.validator} {_short(error.validator_value)}"


def _at(body: Any, path: str | None) -> tuple[bool, Any]:
    if path is None:
        return True, body
    for key in path.split("."):
        if not isinstance(body, dict) or key not in body:
            return False, None
        body = body[key]
    return True, body


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _difference(rule: ChampionRule, cand: Any, champ: Any, where: str = "") -> str | None:
    """The first place where the candidate's answer is further from the champion's than ``rule`` allows."""
    here = where or "(top)"
    if _number(cand) and _number(champ):
        gap = abs(float(cand) - float(champ))
        if math.isnan(gap) or (gap > rule.abs_tolerance and gap > rule.rel_tolerance * abs(float(champ))):
            return (
                f"differs from the champion's at {here}: {cand:.6g} vs {champ:.6g} (difference {gap:.4g}; "
                f"tolerance {rule.abs_tolerance:g} absolute, {rule.rel_tolerance:g} relative)"
            )
        return None
    if isinstance(cand, list) and isinstance(champ, list):
        if len(cand) != len(champ):
            return f"has {len(cand)} values at {here}, the champion's {len(champ)}"
        for i, (a, b) in enumerate(zip(cand, champ, strict=True)):
            found = _difference(rule, a, b, f"{where}/{i}")
            if found:
                return found
        return None
    if isinstance(cand, dict) and isinstance(champ, dict):
        if set(cand) != set(champ):
            return f"has other keys at {here} than the champion's"
        for key in sorted(champ):
            found = _difference(rule, cand[key], champ[key], f"{where}/{key}")
            if found:
                return found
        return None
    if type(cand) is not type(champ):
        return f"has a {type(cand).__name__} at {here} where the champion's has a {type(champ).__name__}"
    return None if cand == champ else f"has another label at {here} than the champion's"


def problem(rule: SmokeRule, answer: Scored, champion: Scored | None) -> str | None:
    """What fails ``answer`` (compared with ``champion``'s, when the rule compares and it is given); None: nothing."""
    if answer.status is None:
        return f"no answer: {answer.error or 'unknown'}"
    if answer.status != rule.status:
        said = f" ({answer.error})" if answer.error else ""
        return f"status {answer.status}{said}, expected {rule.status}"
    if answer.error:
        return answer.error
    if rule.response_schema is not None:
        found = _schema_problem(rule.response_schema, answer.body)
        if found:
            return found
    if rule.champion is None or champion is None:
        return None
    if champion.status != rule.status or champion.error:
        what = champion.error or f"status {champion.status}"
        return f"the champion answered it with {what}, so the answers cannot be compared; check the sample request"
    where = rule.champion.field
    has, cand = _at(answer.body, where)
    has_champ, champ = _at(champion.body, where)
    if not has or not has_champ:
        whose = "answer" if not has else "champion's answer"
        return f"the {whose} has no {where}"
    return _difference(rule.champion, cand, champ, "" if where is None else f"/{where.replace('.', '/')}")


def judge(
    rule: SmokeRule,
    candidate: str,
    answers: Sequence[Scored],
    champion: str | None = None,
    champion_answers: Sequence[Scored] | None = None,
) -> SmokeVerdict:
    """The verdict on the candidate's ``answers`` to ``rule.requests`` (in order) and, with
    ``rule.champion``, on how far they are from ``champion_answers`` to the same requests."""
    compared = rule.champion is not None and champion is not None and champion_answers is not None
    rows: list[dict[str, Any]] = []
    failed: list[int] = []
    for i, answer in enumerate(answers):
        theirs = champion_answers[i] if compared and champion_answers is not None else None
        found = problem(rule, answer, theirs)
        row: dict[str, Any] = {"request": i, "status": answer.status, "ms": round(answer.ms, 1)}
        if theirs is not None:
            row["champion_status"] = theirs.status
        if found:
            row["problem"] = found
            failed.append(i)
        rows.append(row)
    details: dict[str, Any] = {
        "candidate": candidate,
        "champion": champion if compared else None,
        "requests": len(answers),
        "expected_status": rule.status,
        "schema": rule.response_schema is not None,
        "timeout_s": rule.timeout.total_seconds(),
        "failed": failed,
        "answers": rows,
    }
    if rule.champion is not None:
        details["tolerance"] = {
            "field": rule.champion.field,
            "abs": rule.champion.abs_tolerance,
            "rel": rule.champion.rel_tolerance,
        }
    if failed:
        first = rows[failed[0]]
        why = (
            f"smoke test failed: {len(failed)} of {len(answers)} request(s); request {first['request']}: "
            f"{first['problem']}"
        )
        return SmokeVerdict(False, why, details)
    checks = [f"status {rule.status}"]
    if rule.response_schema is not None:
        checks.append("the response schema")
    if compared:
        checks.append(f"within tolerance of {champion}'s answers")
    elif rule.champion is not None:
        checks.append("no champion to compare with (no deployment had traffic)")
    slowest = max((a.ms for a in answers), default=0.0)
    why = f"smoke test passed: {len(answers)} request(s) answered with {', '.join(checks)} (slowest {slowest:.0f} ms)"
    return SmokeVerdict(True, why, details)


def synthetic_load(rule: RolloutRule, step: int, loaded: int | None, verdict: Verdict) -> int:
    """How many synthetic requests (``deploy.rollout.smoke.load``) a step gets whose look says wait:
    none before its bake is over, none twice in one step (``loaded``: the step that had them), else
    what it lacks of ``health.min_requests``, at most ``load``."""
    if rule.smoke is None or not rule.smoke.load or not verdict.final or loaded == step:
        return 0
    return max(0, min(rule.smoke.load, rule.health.min_requests - verdict.candidate.served))
