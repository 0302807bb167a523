"""The candidate gate: whether a candidate model may be rolled out, with the numbers that decided it.

Pure: the adapter gathers the facts (the candidate's tags and properties, those of the champion,
the model version behind the endpoint's live deployment) and this module judges them. The rule:

- the candidate must carry the metric (a tag or property of that name, case-insensitive, numeric);
- it must reach the floor, if the policy sets one (``>= floor``, or ``<= floor`` when lower is better);
- if there is a champion with the metric, the candidate must be strictly better than it, by at least
  ``margin``. Without a champion, or when the champion does not carry the metric, the floor alone decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from handlers.keys import ci_get, finite

if TYPE_CHECKING:
    from handlers.policy import GateRule
    from handlers.ports import CandidateFacts


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    metric: str
    higher_is_better: bool
    candidate: float | None
    champion: float | None
    floor: float | None
    margin: float
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_value(facts: Mapping[str, Any] | None, metric: str) -> float | None:
    """The metric as a number, from tags/properties (values arrive as strings); None if absent or not numeric."""
    return finite(ci_get(facts, metric))


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def evaluate(
    rule: GateRule,
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    candidate_name: str = "candidate",
    champion_name: str = "champion",
) -> GateVerdict:
    """Judge ``candidate`` (its tags and properties) against ``champion`` (None: no live deployment)."""
    metric, higher = rule.metric, rule.higher_is_better
    cand = metric_value(candidate, metric)
    champ = metric_value(champion, metric) if champion is not None else None
    direction = "higher is better" if higher else "lower is better"

    def verdict(passed: bool, why: str) -> GateVerdict:
        return GateVerdict(passed, metric, higher, cand, champ, rule.floor, rule.margin, why)

    if cand is None:
        where = "MLflow metrics" if rule.source == "mlflow" else f"{rule.source} tags or properties"
        if rule.source == "mlflow" and rule.step is not None:
            where = f"MLflow metrics of step {rule.step!r}"
        return verdict(False, f"{candidate_name} has no numeric {metric!r} in its {where}")
    if rule.floor is not None:
        below = cand < rule.floor if higher else cand > rule.floor
        if below:
            return verdict(
                False,
                f"{candidate_name} {metric} {_fmt(cand)} does not reach the floor {_fmt(rule.floor)} ({direction})",
            )
    if champion is None or champ is None:
        if champion is None:
            basis = "no live deployment to compare with"
        else:
            basis = f"{champion_name} carries no numeric {metric!r}"
        floor = f"reaches the floor {_fmt(rule.floor)}" if rule.floor is not None else "has no floor to reach"
        return verdict(True, f"{candidate_name} {metric} {_fmt(cand)} {floor}; {basis}, so the floor alone decides")
    gain = cand - champ if higher else champ - cand
    if gain > 0 and gain >= rule.margin:
        return verdict(
            True,
            f"{candidate_name} {metric} {_fmt(cand)} beats {champion_name} {metric} {_fmt(champ)} "
            f"by {_fmt(gain)} (margin {_fmt(rule.margin)}, {direction})",
        )
    return verdict(
        False,
        f"{candidate_name} {metric} {_fmt(cand)} does not beat {champion_name} {metric} {_fmt(champ)} "
        f"by the margin {_fmt(rule.margin)} ({direction})",
    )


@dataclass(frozen=True)
class CandidateVerdict:
    """What to do with a candidate, from the facts an adapter read: ``deploy`` (start it at 0%),
    ``skip`` (already live, or the gate refused it: recorded, nothing done) or ``fail`` (it cannot
    be deployed as the workspace stands: no live deployment to copy). ``gate`` holds the gate's
    numbers when the policy has a gate."""

    next: str
    why: str
    gate: GateVerdict | None = None


def judge(rule: GateRule | None, facts: CandidateFacts) -> CandidateVerdict:
    """The candidate gate on ``facts``: pure, so a dry run and ``retrain explain`` show the verdict."""
    cand, champ = facts.candidate_version, facts.champion_version
    if cand is not None and champ is not None and (cand.name, cand.version) == (champ.name, champ.version):
        return CandidateVerdict("skip", f"candidate {facts.candidate} is already live in deployment {facts.champion}")
    verdict = None
    if rule is not None and facts.champion_unreadable is not None:
        return CandidateVerdict("skip", facts.champion_unreadable)
    if rule is not None:
        verdict = evaluate(
            rule,
            facts.candidate_metrics,
            facts.champion_metrics,
            candidate_name=f"candidate {facts.candidate}",
            champion_name=f"champion {facts.champion}",
        )
        if not verdict.passed:
            return CandidateVerdict("skip", f"not rolled out: {verdict.why}", verdict)
    if facts.live_deployment is None:
        return CandidateVerdict(
            "fail",
            "the endpoint has no deployment with traffic to copy the instance type, environment and code from; "
            "create the first deployment by hand (az ml online-deployment create --all-traffic)",
            verdict,
        )
    why = verdict.why if verdict is not None else "the policy has no gate: every candidate passes"
    return CandidateVerdict("deploy", why, verdict)
