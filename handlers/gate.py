"""The candidate gate: whether a candidate model may be rolled out, with the numbers that decided it.

Pure: the adapter gathers the facts (the candidate's tags and properties, those of the champion,
the model version behind the endpoint's live deployment) and this module judges them. The rule, for
each metric of the gate (:mod:`handlers.gate_rules`: one ``metric``, or a list of ``metrics``):

- the candidate must carry the metric (a tag or property of that name, case-insensitive, numeric);
- it must reach the floor, if the policy sets one (``>= floor``, or ``<= floor`` when lower is better);
- if there is a champion with the metric, the candidate must be better than it by at least the
  larger of ``margin`` and ``relative_margin`` times the champion's value (strictly better when that
  is 0; a negative margin lets it be that much worse). Without a champion, or when the champion does
  not carry the metric, the floor alone decides;
- each of its slices (metrics whose names match ``slices.pattern``) may be at most the tolerance
  worse than the champion's slice of the same name.

The gate passes when every metric ``require`` names (all by default) passes; every metric's figures
are in the verdict either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from handlers.keys import ci_get, finite

if TYPE_CHECKING:
    from handlers.gate_rules import GateRule, MetricRule
    from handlers.workspace_ports import CandidateFacts, ModelVersion

MAX_SLICES = 50  # slice metrics per pattern: each is recorded in the verdict (and tagged on the version)


@dataclass(frozen=True)
class SliceVerdict:
    """One slice metric of a gate metric: the candidate's and the champion's value, and whether it
    holds (at most the slice rule's tolerance worse)."""

    name: str
    candidate: float | None
    champion: float | None
    passed: bool
    why: str


@dataclass(frozen=True)
class MetricVerdict:
    """One gate metric judged: its figures, the gain over the champion and the gain it needed
    (``needed``: the larger of the absolute and the relative margin), its slices, and whether it
    decides the gate (``required``)."""

    passed: bool
    required: bool
    metric: str
    higher_is_better: bool
    candidate: float | None
    champion: float | None
    floor: float | None
    margin: float
    relative_margin: float | None
    gain: float | None
    needed: float | None
    why: str
    slices: tuple[SliceVerdict, ...] = ()


@dataclass(frozen=True)
class GateVerdict:
    """The gate's verdict: ``passed`` when every required metric passed; ``metrics`` each metric's
    verdict. The flat fields are the first metric's (what records before several metrics held)."""

    passed: bool
    metric: str
    higher_is_better: bool
    candidate: float | None
    champion: float | None
    floor: float | None
    margin: float
    why: str
    metrics: tuple[MetricVerdict, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_value(facts: Mapping[str, Any] | None, metric: str) -> float | None:
    """The metric as a number, from tags/properties (values arrive as strings); None if absent or not numeric."""
    return finite(ci_get(facts, metric))


def slice_names(facts: Mapping[str, Any] | None, rule: MetricRule) -> list[str]:
    """The names in ``facts`` that are slices of ``rule`` (its pattern, case-insensitive; never the
    metric itself), sorted."""
    if rule.slices is None or not facts:
        return []
    pattern = rule.slices.pattern.lower()
    return sorted(str(k) for k in facts if fnmatchcase(str(k).lower(), pattern) and str(k).lower() != rule.name.lower())


def carries_all(rule: GateRule, facts: Mapping[str, Any] | None) -> bool:
    """Whether ``facts`` (a champion's tags) carry every metric of the gate, and the gate judges no
    slices (whose names a version's tags cannot be known to list in full)."""
    return all(metric_value(facts, m.name) is not None and m.slices is None for m in rule.rules)


def tags_for(rule: GateRule, facts: Mapping[str, Any] | None) -> dict[str, str]:
    """What a version registered by the service carries of its metrics, so that it can be judged
    as a champion later: each gate metric and each of its slices (at most :data:`MAX_SLICES`)."""
    out: dict[str, str] = {}
    for m in rule.rules:
        for name in [m.name, *slice_names(facts, m)[:MAX_SLICES]]:
            value = metric_value(facts, name)
            if value is not None:
                out[name] = f"{value:g}"
    return out


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _where(rule: GateRule) -> str:
    if rule.source == "mlflow":
        return "MLflow metrics" if rule.step is None else f"MLflow metrics of step {rule.step!r}"
    return f"{rule.source} tags or properties"


def _slices(
    rule: MetricRule, candidate: Mapping[str, Any], champion: Mapping[str, Any] | None
) -> tuple[list[SliceVerdict], str | None]:
    """Each slice of ``rule`` judged; the second value: why the slices fail as a whole (too many)."""
    if rule.slices is None:
        return [], None
    names = {n.lower(): n for n in slice_names(candidate, rule) + slice_names(champion, rule)}
    if len(names) > MAX_SLICES:
        return [], (
            f"{len(names)} metrics match the slice pattern {rule.slices.pattern!r} (at most {MAX_SLICES}); narrow it"
        )
    tolerance, higher = rule.slices.tolerance, rule.higher_is_better
    out = []
    for name in sorted(names.values(), key=str.lower):
        cand, champ = metric_value(candidate, name), metric_value(champion, name)
        if champ is None:
            out.append(
                SliceVerdict(name, cand, None, True, "the champion has no value for it: nothing to regress from")
            )
        elif cand is None:
            out.append(SliceVerdict(name, None, champ, False, f"the champion has {_fmt(champ)}, the candidate none"))
        else:
            gain = cand - champ if higher else champ - cand
            held = gain >= -tolerance
            said = "holds" if held else "regresses"
            out.append(
                SliceVerdict(
                    name, cand, champ, held, f"{_fmt(cand)} vs {_fmt(champ)}: {said} (tolerance {_fmt(tolerance)})"
                )
            )
    return out, None


def evaluate_metric(
    gate_rule: GateRule,
    rule: MetricRule,
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    candidate_name: str = "candidate",
    champion_name: str = "champion",
) -> MetricVerdict:
    """One metric of the gate: floor, margins against the champion, slices."""
    metric, higher = rule.name, rule.higher_is_better
    cand = metric_value(candidate, metric)
    champ = metric_value(champion, metric) if champion is not None else None
    direction = "higher is better" if higher else "lower is better"
    slices, too_many = _slices(rule, candidate, champion)
    gain = None if cand is None or champ is None else (cand - champ if higher else champ - cand)
    needed = None
    if champ is not None:
        needed = max(
            rule.margin, rule.relative_margin * abs(champ) if rule.relative_margin is not None else rule.margin
        )

    def verdict(passed: bool, why: str) -> MetricVerdict:
        if passed and too_many is not None:
            passed, why = False, f"{why}; but {too_many}"
        elif passed and any(not s.passed for s in slices):
            bad = [s for s in slices if not s.passed]
            passed = False
            why = f"{why}; but {len(bad)} of {len(slices)} slice(s) regress: " + ", ".join(
                f"{s.name} {s.why}" for s in bad
            )
        elif passed and slices:
            why = f"{why}; all {len(slices)} slice(s) hold"
        return MetricVerdict(
            passed, gate_rule.required(metric), metric, higher, cand, champ, rule.floor, rule.margin,
            rule.relative_margin, gain, needed, why, tuple(slices),
        )  # fmt: skip

    if cand is None:
        return verdict(False, f"{candidate_name} has no numeric {metric!r} in its {_where(gate_rule)}")
    if rule.floor is not None and (cand < rule.floor if higher else cand > rule.floor):
        return verdict(
            False, f"{candidate_name} {metric} {_fmt(cand)} does not reach the floor {_fmt(rule.floor)} ({direction})"
        )
    if champ is None or gain is None or needed is None:
        basis = (
            "no live deployment to compare with"
            if champion is None
            else f"{champion_name} carries no numeric {metric!r}"
        )
        floor = f"reaches the floor {_fmt(rule.floor)}" if rule.floor is not None else "has no floor to reach"
        return verdict(True, f"{candidate_name} {metric} {_fmt(cand)} {floor}; {basis}, so the floor alone decides")
    margin = f"margin {_fmt(rule.margin)}" + (
        f", relative {_fmt(rule.relative_margin)}: {_fmt(needed)}" if rule.relative_margin is not None else ""
    )
    if gain >= needed and (gain > 0 or needed < 0):
        beats = "beats" if gain > 0 else "is within the margin of"
        return verdict(
            True,
            f"{candidate_name} {metric} {_fmt(cand)} {beats} {champion_name} {metric} {_fmt(champ)} "
            f"by {_fmt(gain)} ({margin}, {direction})",
        )
    return verdict(
        False,
        f"{candidate_name} {metric} {_fmt(cand)} does not beat {champion_name} {metric} {_fmt(champ)} "
        f"by the {margin} ({direction})",
    )


def evaluate(
    rule: GateRule,
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    candidate_name: str = "candidate",
    champion_name: str = "champion",
) -> GateVerdict:
    """Judge ``candidate`` (its tags, properties or metrics) against ``champion`` (None: no live
    deployment) on every metric of the gate; it passes when every required one does."""
    judged = [
        evaluate_metric(rule, m, candidate, champion, candidate_name=candidate_name, champion_name=champion_name)
        for m in rule.rules
    ]
    decide = [m for m in judged if m.required]
    passed = all(m.passed for m in decide)
    if len(judged) == 1:
        why = judged[0].why
    else:
        first = [m for m in decide if not m.passed] if not passed else decide
        rest = [m for m in judged if m not in first]
        why = "; ".join(
            f"{m.metric}: {m.why}" + ("" if m.required else " (recorded, not required)") for m in first + rest
        )
        count = f"{sum(m.passed for m in decide)} of {len(decide)} required metric(s) pass"
        why = f"{count}: {why}"
    top = judged[0]
    return GateVerdict(
        passed, top.metric, top.higher_is_better, top.candidate, top.champion, top.floor, top.margin, why, tuple(judged)
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


def _same(cand: ModelVersion, champ: ModelVersion) -> bool:
    """The same model version: name and version, both a registry's or both a workspace's (a registry's
    version 4 is not the workspace's version 4 of the same name)."""
    registry = "azureml://registries/"
    return (cand.name, cand.version) == (champ.name, champ.version) and (
        cand.id.lower().startswith(registry) == champ.id.lower().startswith(registry)
    )


def judge(rule: GateRule | None, facts: CandidateFacts) -> CandidateVerdict:
    """The candidate gate on ``facts``: pure, so a dry run and ``retrain explain`` show the verdict."""
    if facts.candidate_unreadable is not None:  # a registry version not there, or not from the upstream
        return CandidateVerdict("skip", facts.candidate_unreadable)
    cand, champ = facts.candidate_version, facts.champion_version
    if cand is not None and champ is not None and _same(cand, champ):
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
