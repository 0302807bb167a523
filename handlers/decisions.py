"""Decide: the pure heart of the service.

``decide(signal, policy)`` returns one decision per concerned model (or one ``Skip`` when no
model is concerned): ``Retrain``, ``Deploy`` or ``Skip(reason)`` (:mod:`handlers.plans`), never an
exception: whatever is wrong with an event is a skip that says what and how to fix it. A manual request
is checked before it is claimed (:func:`handlers.inputs.check_manual`), so that its caller gets a 4xx
instead. No I/O, no clock read, no SDK import. Rollout transitions are decided by :mod:`handlers.rollout.progress`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.breaches import on_breach
from handlers.inputs import manual_problem
from handlers.keys import ci_get
from handlers.newdata import on_blob
from handlers.pickup import on_registry_version
from handlers.plans import (
    Decision,
    Deploy,
    Skip,
    decision_id,
    deploy_plan,
    run_decision_id,
    skip,
)
from handlers.retrain_plan import retrain
from handlers.signals import (
    TAG_DECISION,
    TAG_MODEL,
    AlertFired,
    BlobCreated,
    DriftDetected,
    Ignored,
    ManualRequest,
    ModelDeployed,
    ModelRegistered,
    RegistryVersion,
    RunFinished,
    Signal,
)
from handlers.upstream import on_upstream

if TYPE_CHECKING:  # the policy module imports pydantic; decide only reads the objects
    from handlers.policy import ModelPolicy, Policy

# --------------------------------------------------------------------------- decide


def decide(signal: Signal, policy: Policy, workspaces: frozenset[str] = frozenset()) -> list[Decision]:
    """The decisions for one signal; nothing here reads a clock: the rules that depend on time
    (cooldown, budget) are guards, applied with the ledger. ``workspaces``: the normalised ids of the
    workspaces the service acts for (an alert counts only about them)."""
    if isinstance(signal, Ignored):
        return [skip(signal.trigger, signal.reason)]
    if isinstance(signal, DriftDetected):
        return _on_drift(signal, policy)
    if isinstance(signal, BlobCreated):
        return on_blob(signal, policy)
    if isinstance(signal, RunFinished):
        return _on_run(signal, policy)
    if isinstance(signal, ModelRegistered):
        return [_on_registration(signal, policy)]
    if isinstance(signal, ModelDeployed):
        models = ", ".join(signal.model_ids) or "no models"
        return [skip(signal.trigger, f"deployment of {models} to {signal.service_name or 'a service'} recorded")]
    if isinstance(signal, ManualRequest):
        return [_on_manual(signal, policy)]
    if isinstance(signal, RegistryVersion):
        return on_registry_version(signal, policy)
    assert isinstance(signal, AlertFired)
    return _on_alert(signal, policy, workspaces)


def _on_drift(signal: DriftDetected, policy: Policy) -> list[Decision]:
    if ci_get(signal.run_tags, TAG_DECISION):
        return [
            skip(
                signal.trigger,
                "the drift signal comes from a run this service started; it never retrains from its own runs",
            )
        ]
    concerned = [(name, mp) for name, mp in policy.models.items() if _listens(mp, signal)]
    if not concerned:
        what = f"drift monitor {signal.monitor!r}" + (f" (signal {signal.signal_name!r})" if signal.signal_name else "")
        return [skip(signal.trigger, f"no model in the policy listens to {what}")]
    out: list[Decision] = []
    for model, mp in concerned:
        rule = mp.drift
        if rule.min_coefficient is not None and signal.generation == "v1" and signal.coefficient is None:
            got = "no DriftCoefficient" if signal.coefficient_raw is None else f"{signal.coefficient_raw!r}"
            out.append(
                skip(
                    signal.trigger,
                    f"the drift event's DriftCoefficient is not a number (it has {str(got)[:80]}), and the policy "
                    f"retrains only from {rule.min_coefficient} up (models.{model}.drift.min_coefficient); "
                    "nothing is retrained on a value that cannot be compared",
                    model,
                    field="DriftCoefficient",
                )
            )
            continue
        if (
            rule.min_coefficient is not None
            and signal.coefficient is not None
            and signal.coefficient < rule.min_coefficient
        ):
            out.append(
                skip(
                    signal.trigger,
                    f"drift coefficient {signal.coefficient:.3f} is below the policy's min_coefficient {rule.min_coefficient}",
                    model,
                )
            )
            continue
        reason = signal.detail
        if rule.min_coefficient is not None and signal.coefficient is not None:
            reason += f" (>= min_coefficient {rule.min_coefficient})"
        if signal.generation == "v2":
            out.append(on_breach(model, mp, signal, reason))
            continue
        out.append(retrain(model, mp, signal.trigger, reason, signal.event_data, {}, workspace=signal.workspace))
    return out


def _listens(mp: ModelPolicy, signal: DriftDetected) -> bool:
    """A v1 drift monitor the model lists; or a v2 breach from a monitor the model lists (its run's
    experiment), of a signal it lists when it lists signals."""
    monitors = {m.lower() for m in mp.drift.monitors}
    if signal.monitor.lower() not in monitors:
        return False
    if signal.generation == "v1" or not mp.drift.signals:
        return True
    return (signal.signal_name or "").lower() in {s.lower() for s in mp.drift.signals}


def in_scope(target: str, workspaces: frozenset[str], named: list[str]) -> bool:
    """Whether an alert's target resource is the workspace (or a resource in it, such as an online
    endpoint), or one the policy names for the model."""
    key = target.strip().strip("/").lower()
    return any(key == w or key.startswith(w + "/") for w in workspaces) or key in {
        n.strip().strip("/").lower() for n in named
    }


def _on_alert(signal: AlertFired, policy: Policy, workspaces: frozenset[str]) -> list[Decision]:
    listening = [(n, mp) for n, mp in policy.models.items() if signal.rule.lower() in {a.lower() for a in mp.alerts}]
    if not listening:
        return [skip(signal.trigger, f"no model in the policy listens to alert rule {signal.rule!r}")]
    if not signal.fired:
        return [
            skip(signal.trigger, f"alert {signal.rule!r} {signal.condition.lower()}; recorded", model)
            for model, _ in listening
        ]
    concerned = [
        (n, mp) for n, mp in listening if any(in_scope(t, workspaces, mp.alert_targets) for t in signal.targets)
    ]
    if not concerned:
        targets = ", ".join(t[:200] for t in signal.targets[:3]) or "no resource"
        return [
            skip(
                signal.trigger,
                f"alert {signal.rule!r} fired for {targets}, which is neither this service's workspace nor a resource "
                f"in it: it is not acted on; to act on alerts about another resource, list its id under "
                f"models.{model}.alert_targets",
                model,
                targets=list(signal.targets[:10]),
            )
            for model, _ in listening
        ]
    what = (
        f"Azure Monitor alert {signal.rule!r} fired ({', '.join(filter(None, (signal.severity, signal.signal_type)))})"
    )
    return [retrain(model, mp, signal.trigger, what, {}, {}) for model, mp in concerned]


def _on_run(signal: RunFinished, policy: Policy) -> list[Decision]:
    """A finished run: a deploy candidate (:func:`_on_candidate_run`) and, for the models whose
    ``retrain.on.runs`` names its experiment, an upstream run (:func:`handlers.upstream.on_upstream`);
    when upstream rules spoke, the candidate rules' skips about no model are left out."""
    upstream = on_upstream(signal, policy)
    if not upstream:
        return _on_candidate_run(signal, policy)
    out: dict[str, Decision] = {d.id: d for d in upstream}
    for d in _on_candidate_run(signal, policy):
        if d.model is not None and not (isinstance(d, Skip) and d.id in out):
            out[d.id] = d
    return list(out.values())


def _on_candidate_run(signal: RunFinished, policy: Policy) -> list[Decision]:
    trigger, run = signal.trigger, signal.run_id
    ours = signal.ours  # verified against the ledger; a tag alone proves nothing
    tagged_model = ci_get(signal.run_tags, TAG_MODEL) if ours else None
    if signal.is_child:
        return [
            skip(
                trigger,
                f"run {run} is a step or child of another run: only the top-level pipeline run is a candidate",
                tagged_model,
            )
        ]
    if ours:
        if tagged_model not in policy.models:
            return [
                skip(
                    trigger,
                    f"run {run} was started by this service for model {tagged_model!r}, which the policy no longer has",
                )
            ]
        candidates = [(str(tagged_model), policy.models[str(tagged_model)])]
    else:
        candidates = [
            (name, mp)
            for name, mp in policy.models.items()
            if mp.candidates.experiments
            and signal.experiment.lower() in {e.lower() for e in mp.candidates.experiments}
            and all(str(ci_get(signal.run_tags, k)) == v for k, v in mp.candidates.tags.items())
        ]
    if not signal.succeeded:
        if ours:
            return [
                skip(
                    trigger,
                    f"retraining run {run} ended {signal.status}; its single-flight hold is released, nothing to deploy",
                    str(tagged_model),
                )
            ]
        return [
            skip(
                trigger,
                f"run {run} ended {signal.status}; not a retraining run of this service",
                candidates[0][0] if candidates else None,
            )
        ]
    if not candidates:
        if signal.claims_service:
            claimed = ci_get(signal.run_tags, TAG_DECISION)
            return [
                skip(
                    trigger,
                    f"run {run} carries the tag {TAG_DECISION}={str(claimed)[:80]!r}, but the ledger holds no "
                    f"retraining decision of that id whose job is {run}: this service did not submit it, so it is "
                    f"not deployed; to deploy runs of experiment {signal.experiment!r} anyway, list it under "
                    "models.<model>.candidates.experiments (with candidates.tags to narrow it)",
                    provenance="unverified",
                )
            ]
        return [
            skip(
                trigger,
                f"run {run} of experiment {signal.experiment!r} was not started by this service and no policy names it as a candidate",
            )
        ]
    out: list[Decision] = []
    for model, mp in candidates:
        if mp.deploy is None:
            out.append(
                skip(trigger, f"run {run} finished, but the policy has no 'deploy' section for model {model!r}", model)
            )
            continue
        did = run_decision_id(model, run)
        plan = deploy_plan(model, mp, did, "run", signal, None)
        why = "retraining run" if ours else f"candidate run of experiment {signal.experiment!r}"
        out.append(Deploy(did, model, f"{why} {run} completed; evaluating it as a candidate", trigger, plan))
    return out


def _on_registration(signal: ModelRegistered, policy: Policy) -> Decision:
    name, version, trigger = signal.model_name, signal.model_version, signal.trigger
    mp = policy.models.get(name)
    if mp is None:
        return skip(trigger, f"registration of {name}:{version} recorded; the model is not in the policy")
    if ci_get({str(k): v for k, v in signal.tags.items()}, TAG_DECISION):
        return skip(
            trigger,
            f"registration of {name}:{version} recorded; it comes from this service's retraining run, which is deployed from the run's completion",
            name,
        )
    if mp.deploy is None or not mp.deploy.on_registration:
        return skip(
            trigger,
            f"registration of {name}:{version} recorded; the policy does not deploy {name} on registration",
            name,
        )
    did = decision_id("deploy", name, trigger)
    plan = deploy_plan(name, mp, did, "registration", None, version)
    return Deploy(did, name, f"model {name}:{version} registered and the policy deploys on registration", trigger, plan)


def _on_manual(signal: ManualRequest, policy: Policy) -> Decision:
    model, trigger = signal.model, signal.trigger
    mp = policy.models.get(model)
    problem = manual_problem(signal, mp) if mp is not None else f"model {model!r} is not in the policy"
    if problem is not None or mp is None:  # check_manual refuses these before the claim
        return skip(trigger, problem or "", model if mp is not None else None)
    reason = f"manual request: {signal.reason}"
    if signal.action == "retrain":
        return retrain(
            model, mp, trigger, reason, {}, signal.inputs, manual=True, force=signal.force, dry_run=signal.dry_run
        )
    assert mp.deploy is not None
    did = decision_id("deploy", model, trigger)
    plan = deploy_plan(model, mp, did, "manual", None, signal.version)
    return Deploy(did, model, reason, trigger, plan, force=signal.force, dry_run=signal.dry_run)
