"""Rendering a retrain: the pipeline job a model's policy runs for one trigger, its inputs checked
(:mod:`handlers.inputs`), or the Skip that says why it cannot run. Pure, shared by every rule that
starts a retrain (:mod:`handlers.decisions`, :mod:`handlers.newdata`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from handlers.inputs import bare, input_problem, reference_problem, v1_dataset_problem
from handlers.keys import ci_get, slug
from handlers.plans import SERVICE_TAG_VALUE, JobPlan, Retrain, Skip, decision_id, skip
from handlers.signals import ALERT, DRIFT, RUN_STATUS, TAG_DECISION, TAG_MODEL, TAG_SERVICE, TAG_TRIGGER, Trigger

if TYPE_CHECKING:
    from handlers.policy import ModelPolicy


def retrain(
    model: str,
    mp: ModelPolicy,
    trigger: Trigger,
    reason: str,
    event_data: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    manual: bool = False,
    force: bool = False,
    dry_run: bool = False,
    workspace: str = "",
    did: str | None = None,
) -> Retrain | Skip:
    """The retrain of ``model`` that ``trigger`` asks for, with its inputs checked and its job rendered,
    or a Skip that says why not. ``did``: the decision's id when it is not the trigger's (a retrain keyed
    by what it is about, such as an upstream run)."""
    rule = mp.retrain
    if rule is None:
        return skip(trigger, f"policy has no 'retrain' section for model {model!r}", model)
    keyed = did is not None  # keyed by its subject: carried out once, whichever trigger asks (Retrain.once)
    did = did or decision_id("retrain", model, trigger)
    inputs: dict[str, dict[str, Any]] = {}
    for name, spec in rule.inputs.items():
        value: Any = None
        origin = "policy"
        if name in overrides:
            value, origin = overrides[name], "request"
        elif spec.from_event and ci_get(event_data, spec.from_event) is not None:
            value, origin = ci_get(event_data, spec.from_event), f"event.{spec.from_event}"
            if spec.type != "literal" and trigger.event_type == DRIFT and bare(value):
                # SDK v1 drift (legacy): its dataset ids are v1 dataset GUIDs, not data asset names
                if spec.value is None:
                    return skip(trigger, v1_dataset_problem(model, name, spec.from_event, value), model, input=name)
                value, origin = spec.value, f"policy (the event's {spec.from_event} is a v1 dataset id)"
        else:
            value = spec.value
        problem = input_problem(model, name, spec, value, origin, manual)
        if problem is None and origin.startswith("event.") and spec.type != "literal":
            problem = reference_problem(model, name, spec, str(value), workspace)
        if problem is not None:
            return skip(trigger, problem, model, input=name)
        if spec.type != "literal" and origin.startswith("event.") and ":" not in str(value) and "/" not in str(value):
            value = f"azureml:{value}"  # a bare dataset id or name from an event names a data asset
        inputs[name] = {"type": spec.type, "value": value, "from": origin}
    job_name = f"retrain-{slug(model, 40)}-{did.split('-', 1)[1]}"
    tags = {
        TAG_SERVICE: SERVICE_TAG_VALUE,
        TAG_MODEL: model,
        TAG_DECISION: did,
        TAG_TRIGGER: f"{trigger.event_type.rsplit('.', 1)[-1]}:{trigger.event_id}"[:256],
    }
    plan = JobPlan(
        name=job_name,
        model=model,
        component=str(rule.pipeline),
        experiment=rule.experiment or f"retrain-{slug(model, 40)}",
        compute=rule.compute,
        inputs=inputs,
        tags=tags,
        display_name=f"retrain {model}: {reason}"[:200],
        # drift and alerts only: new data (blobs, data-asset versions, an upstream run) is new by itself, an age is
        # the policy's own word, and a person who asks is not second-guessed (docs/policy.md, worthiness)
        checks={"worthiness": _champion_at(mp)} if rule.worthiness and not manual and _about_drift(trigger) else {},
    )
    return Retrain(did, model, reason, trigger, plan, force=force, dry_run=dry_run, once=keyed)


def _champion_at(mp: ModelPolicy) -> dict[str, Any]:
    """Where the worthiness check finds the champion: the version the online endpoint serves (``endpoint``),
    read from the registry it is served from when that is the policy's (``registry``, a downstream
    environment's); without an endpoint (no deploy section, a batch endpoint), the model's latest registered version."""
    endpoint = mp.deploy.endpoint if mp.deploy is not None else None
    if not endpoint:
        return {}
    registry = mp.environment.serves_from if mp.environment is not None else None
    return {"endpoint": endpoint, **({"registry": registry} if registry else {})}


def _about_drift(trigger: Trigger) -> bool:
    """A retrain asked for by a drift signal (a v2 monitor's breach, a legacy v1 drift event) or an alert."""
    return trigger.event_type in (DRIFT, RUN_STATUS) or trigger.channel == ALERT
