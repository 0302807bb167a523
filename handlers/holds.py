"""What the reconciler (:mod:`handlers.reconcile`) makes of a hold it finds: the decision a reserved
record was written for, the records that say why it released a hold instead of finishing it, and the
signal of a run whose event was missed. Pure: values from values."""

from __future__ import annotations

from datetime import datetime

from handlers import guards
from handlers.executor import KEEPS_BUDGET
from handlers.keys import digest
from handlers.plans import Deploy, DeployPlan, JobPlan, Retrain
from handlers.records import DecisionRecord, Flight, iso
from handlers.signals import (
    RECONCILER_CHANNEL,
    RUN_COMPLETED,
    RUN_STATUS,
    TAG_DECISION,
    TAG_MODEL,
    TAG_SERVICE,
    RunFinished,
    Trigger,
)
from handlers.workspace_ports import JobInfo

ACTIONS = {guards.RETRAIN: "retrain", guards.ROLLOUT: "deploy"}  # the decision action that holds each slot
RECONCILER = "reconciler"


def decision_from_record(record: DecisionRecord, model: str, kind: str) -> Retrain | Deploy:
    """The decision a reserved record was written for, with the plan it rendered. Raises KeyError,
    TypeError or ValueError when the record does not hold a plan this version can act on."""
    if ACTIONS.get(kind) != record.action:
        raise ValueError(f"a {record.action!r} decision does not hold the {kind} slot")
    rendered = record.details["rendered"]
    trigger = Trigger.from_dict(record.trigger)
    if kind == guards.RETRAIN:
        said = {"signal": record.details["signal"]} if "signal" in record.details else {}
        return Retrain(record.id, model, record.reason, trigger, JobPlan.from_dict(rendered), details=said)
    return Deploy(record.id, model, record.reason, trigger, DeployPlan.from_dict(rendered))


def release_record(model: str, kind: str, flight: Flight, now: datetime, why: str, give_back: bool) -> DecisionRecord:
    """The decision that explains why the reconciler released a hold instead of finishing its action."""
    consequence = (
        "the cooldown and budget it took are given back" if give_back else "the cooldown and budget it took stand"
    )
    return DecisionRecord(
        id=flight.decision,
        model=model,
        action=ACTIONS.get(kind, kind),
        outcome="failed",
        reason=f"reconciler released the {kind} hold reserved at {flight.since}: {why}; nothing was resumed and {consequence}",
        trigger={"source": RECONCILER, "event_id": flight.decision, "event_type": "Tick"},
        at=iso(now),
        details={"released_by": RECONCILER, KEEPS_BUDGET: not give_back or None, "reserved_since": flight.since},
    )


def missed_run(model: str, flight: Flight, job: JobInfo, workspace: str) -> RunFinished:
    """The signal the ended ``job``'s own event would have given: a top-level run of this service.
    Its trigger is the reconciler's, with an id that depends only on the job and its status, so a
    second pass is a duplicate delivery; the event, if it comes late, is another event, but it makes
    the same decisions (a run's deploy decision is keyed by the run), which find their work done."""
    status = job.status.lower()
    event_type = RUN_COMPLETED if status == "completed" else RUN_STATUS
    tags = {TAG_SERVICE: "retrain-service", TAG_MODEL: model, TAG_DECISION: flight.decision, **job.tags}
    return RunFinished(
        trigger=Trigger(RECONCILER, f"{RECONCILER}:{job.name}:{status}", event_type, channel=RECONCILER_CHANNEL),
        workspace=workspace,
        run_id=job.name,
        experiment=job.experiment,
        status=status,
        is_child=False,
        run_tags=tags,
        run_properties=dict(job.properties),
    )


def job_missing_record(model: str, flight: Flight, now: datetime) -> DecisionRecord:
    """The decision that explains why the reconciler released the hold of a job the workspace does
    not have. Its own id (the retrain's record keeps saying what was submitted), the same on every
    pass, so a pass that dies between writing it and freeing the slot is simply repeated."""
    job = str(flight.job)
    return DecisionRecord(
        id=f"rl-{digest('release', model, flight.decision, job)}",
        model=model,
        action=ACTIONS[guards.RETRAIN],
        outcome="failed",
        reason=(
            f"reconciler released the retrain hold of job {job} (decision {flight.decision}, reserved at "
            f"{flight.since}): the workspace has no such job (deleted, or the backend or workspace changed); "
            "the cooldown and budget it took stand"
        ),
        trigger={"source": RECONCILER, "event_id": f"{RECONCILER}:{job}:missing", "event_type": "Tick"},
        at=iso(now),
        job={"name": job, "url": None},
        details={
            "released_by": RECONCILER,
            KEEPS_BUDGET: True,
            "reserved_since": flight.since,
            "retrain_decision": flight.decision,
        },
    )
