"""A rollout's progress and its transitions, as values: where a rollout stands
(:class:`RolloutProgress`, kept in its flight), one move of it (:class:`Transition`), and the one
table of transition kinds (:data:`KINDS`) that says everything the service does differently for
each kind.

A passing candidate becomes a deployment at 0% beside the live one (its rollout flight is
``submitted``). The reconciler then moves it on, one transition per pass
(:class:`handlers.rollout.stepper.RolloutStepper`, run by :class:`handlers.reconcile.Reconciler`): once the
deployment is provisioned, the candidate gets ``steps[0]`` percent of the traffic; on each pass the
step's window is judged against the baseline: healthy after the ``bake`` -> the next step (at 100%:
``promote``, the flight is released), unhealthy (at any look) -> ``rollback`` (the endpoint gets back
the traffic it had before the rollout, the flight is released). An operator's ``pause``, ``resume``,
``promote-now`` and ``manual-rollback`` (:mod:`handlers.operate`) are transitions like the others.

Every transition is written ahead into the flight (:attr:`RolloutProgress.pending`) before it
touches Azure, carried out, recorded under a deterministic id, then committed
(:mod:`handlers.rollout.changes`). A crash anywhere leaves the pending transition for the next pass,
which carries out the same one again: the same traffic (which the adapter does not send twice), the
same record id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from handlers.keys import digest
from handlers.records import Flight, from_iso
from handlers.rollout.traffic import fmt

ROLLOUT = "rollout"  # the flight kind (handlers.guards.ROLLOUT), and the key of its progress in the flight's data
RECONCILER = "reconciler"


def _split_of(value: Any) -> dict[str, int] | None:
    return None if value is None else {str(k): int(v) for k, v in dict(value).items()}


# --------------------------------------------------------------------------- a transition


@dataclass(frozen=True)
class Transition:
    """One move of a rollout, decided on the step ``from_step`` (-1: before the first step) and written
    ahead into the flight before it touches Azure: ``kind`` one of :data:`KINDS`; ``target`` the
    traffic to set (None: leave the traffic as it is); ``mirror`` the endpoint's mirror traffic to set
    with it, in the same request (None: leave it as it is; ``{}``: no deployment mirrored). Its record id depends only on the model, the
    deploy decision, the kind and the step, so a pass that carries out a transition a dead pass left
    pending writes the same record. An operator's transition carries the ``trigger`` of the request
    (who asked), and its id depends on that request too."""

    id: str
    kind: str
    step: int
    from_step: int
    target: dict[str, int] | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] | None = None
    mirror: dict[str, int] | None = None

    @classmethod
    def of(
        cls,
        model: str,
        flight: Flight,
        kind: str,
        step: int,
        from_step: int,
        target: dict[str, int] | None,
        reason: str,
        *,
        trigger: Mapping[str, Any] | None = None,
        mirror: Mapping[str, int] | None = None,
        **details: Any,
    ) -> Transition:
        prefix = KINDS[kind].prefix
        asked = () if trigger is None else (str(trigger.get("event_id")),)
        return cls(
            id=f"{prefix}-{digest(ROLLOUT, model, flight.decision, kind, str(step), *asked)}",
            kind=kind,
            step=step,
            from_step=from_step,
            target=None if target is None else dict(target),
            reason=reason,
            details={k: v for k, v in details.items() if v is not None},
            trigger=None if trigger is None else dict(trigger),
            mirror=None if mirror is None else dict(mirror),
        )

    @property
    def row(self) -> Kind:
        """Its kind's row in :data:`KINDS`."""
        return KINDS[self.kind]

    def replaced_by_rollback(self, model: str, flight: Flight, original: dict[str, int] | None, why: str) -> Transition:
        """The rollback that takes this transition's place when Azure refused it for good."""
        return Transition.of(
            model,
            flight,
            "rollback",
            self.step,
            self.from_step,
            original,
            f"rollout of {flight.job} rolled back: setting traffic {fmt(self.target)} was refused: {why}",
            trigger=self.trigger,
            mirror=None if self.mirror is None else {},  # a mirror it was to set or clear: none
            refused=why,
        )

    def failed(self, why: str) -> Transition:
        return replace(self, reason=f"{self.reason}; failed: {why}; set the traffic by hand")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "kind": self.kind,
            "step": self.step,
            "from": self.from_step,
            "target": self.target,
            "reason": self.reason,
            "details": dict(self.details),
            "trigger": None if self.trigger is None else dict(self.trigger),
        }
        if self.mirror is not None:  # kept only when set: the shape earlier versions wrote otherwise
            out["mirror"] = dict(self.mirror)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transition:
        """A transition as the flight keeps it (raises KeyError, TypeError or ValueError otherwise)."""
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            step=int(data["step"]),
            from_step=int(data.get("from", data["step"])),
            target=_split_of(data["target"]),
            reason=str(data["reason"]),
            details=dict(data.get("details") or {}),
            trigger=dict(data["trigger"]) if data.get("trigger") else None,
            mirror=_split_of(data.get("mirror")),
        )


# --------------------------------------------------------------------------- the progress


@dataclass(frozen=True)
class RolloutProgress:
    """Where a rollout stands, as its flight keeps it (``flight.data["rollout"]``, written by
    :meth:`to_dict`, read by :meth:`from_dict`: the stored shape is the one every earlier version
    wrote, so ledgers written by them load).

    ``endpoint``/``deployment``: the candidate; ``steps``: its traffic percentages; ``original``: the
    endpoint's traffic before the rollout (None until the first step is decided); ``step``: the
    current step (-1: before the first); ``traffic``: what the current step set; ``step_started``:
    when its bake started (``iso``); ``held``: the step a hold was recorded at (once per step);
    ``paused``: an operator's pause (``at``, ``by``, ``decision``); ``pending``: the transition
    written ahead and not committed yet; ``restores_kept``: an operator's rollback to the traffic the
    last promotion replaced (its commit forgets :attr:`handlers.records.ModelState.kept`); ``smoked``:
    the record id of the candidate's passed smoke test (None: none passed yet); ``mirror``: the shadow
    stage, while the candidate gets mirrored traffic before its first step (``percent``, ``at``: since
    when; its bake started then, ``step_started``); ``compare``: a batch candidate's comparison job
    (:mod:`handlers.rollout.compare`: ``jobs`` by role, ``data``, ``champion``, ``at``: since when);
    ``superseded``: how many smoke tests not judged yet an operator's transition took the place of
    (:mod:`handlers.rollout.supersede`): the smoke test written again after them carries the count
    (``details.round``), so that it is never taken for one of them, whatever the clock said."""

    endpoint: str = ""
    deployment: str = ""
    steps: tuple[int, ...] = ()
    original: dict[str, int] | None = None
    step: int = -1
    traffic: dict[str, int] | None = None
    step_started: str | None = None
    held: int | None = None
    paused: dict[str, Any] | None = None
    pending: Transition | None = None
    restores_kept: bool = False
    smoked: str | None = None
    loaded: int | None = None
    mirror: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None
    superseded: int = 0

    @property
    def started(self) -> datetime | None:
        """When the current step's bake started."""
        return from_iso(self.step_started)

    @property
    def at(self) -> str:
        """Where it stands, for people: ``at step 2 of 3 (50%)`` or ``before its first step``."""
        if 0 <= self.step < len(self.steps):
            return f"at step {self.step + 1} of {len(self.steps)} ({self.steps[self.step]}%)"
        if self.mirror:
            return f"in its shadow stage ({self.mirror.get('percent')}% mirrored, no live traffic)"
        return "before its first step"

    @classmethod
    def of(cls, flight: Flight | None) -> RolloutProgress | None:
        """The progress ``flight`` keeps; None until the rollout's first transition is written."""
        data = None if flight is None else flight.data.get(ROLLOUT)
        return cls.from_dict(data) if isinstance(data, Mapping) else None

    def kept_in(self, flight: Flight) -> Flight:
        """``flight`` keeping this progress."""
        return replace(flight, data={**flight.data, ROLLOUT: self.to_dict()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutProgress:
        """The progress as a flight keeps it; a key left out reads as its default (raises KeyError,
        TypeError or ValueError on a value of another type)."""
        held, paused, pending, mirror = data.get("held"), data.get("paused"), data.get("pending"), data.get("mirror")
        compare = data.get("compare")
        return cls(
            endpoint=str(data.get("endpoint") or ""),
            deployment=str(data.get("deployment") or ""),
            steps=tuple(int(p) for p in data.get("steps") or ()),
            original=_split_of(data.get("original")),
            step=int(data.get("step", -1)),
            traffic=_split_of(data.get("traffic")),
            step_started=str(data["step_started"]) if data.get("step_started") else None,
            held=None if held is None else int(held),
            paused=dict(paused) if paused else None,
            pending=Transition.from_dict(pending) if pending else None,
            restores_kept=bool(data.get("restores_kept")),
            smoked=str(data["smoked"]) if data.get("smoked") else None,
            loaded=None if data.get("loaded") is None else int(data["loaded"]),
            mirror=dict(mirror) if mirror else None,
            compare=dict(compare) if compare else None,
            superseded=int(data.get("superseded") or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "deployment": self.deployment,
            "steps": list(self.steps),
            "original": None if self.original is None else dict(self.original),
            "step": self.step,
            "traffic": None if self.traffic is None else dict(self.traffic),
            "step_started": self.step_started,
            "held": self.held,
            "paused": None if self.paused is None else dict(self.paused),
            "pending": None if self.pending is None else self.pending.to_dict(),
        }
        if self.restores_kept:
            out["restores_kept"] = True
        if self.smoked:
            out["smoked"] = self.smoked
        if self.loaded is not None:
            out["loaded"] = self.loaded
        if self.mirror:
            out["mirror"] = dict(self.mirror)
        if self.compare:
            out["compare"] = dict(self.compare)
        if self.superseded:
            out["superseded"] = self.superseded
        return out

    def started_over(self, held: RolloutProgress | None) -> RolloutProgress:
        """This start of a rollout (its candidate, steps, original traffic, step and traffic) laid
        over what the flight holds already (a pause, a pending transition, ...)."""
        if held is None:
            return self
        return replace(
            held,
            endpoint=self.endpoint,
            deployment=self.deployment,
            steps=self.steps,
            original=self.original,
            step=self.step,
            traffic=self.traffic,
        )


# --------------------------------------------------------------------------- the kinds

# How a transition that does not end the rollout changes its progress when it is committed at ``at``
# (``iso``); the pending transition is cleared before.
Rule = Callable[[RolloutProgress, Transition, str], RolloutProgress]


def _stepped(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    # the step's bake starts; a shadow stage is over (the step cleared the mirror with its traffic)
    return replace(p, step=t.step, traffic=t.target, step_started=at, held=None, mirror=None)


def _mirrored(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    percent = next(iter((t.mirror or {}).values()), None)
    return replace(p, mirror={"percent": percent, "at": at}, step_started=at, held=None)  # the shadow's bake starts


def _held(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    return replace(p, held=t.step)  # recorded once per step


def _paused(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    return replace(p, paused={"at": at, "by": (t.trigger or {}).get("caller"), "decision": t.id})


def _smoked(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    return replace(p, smoked=t.id)  # the candidate answered its smoke test: the rollout goes on


def _loaded(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    return replace(p, loaded=t.step)  # once per step: the step waits for the synthetic requests to be read


def _compared(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    # both batch jobs were invoked: the comparison waits for them from now (handlers.rollout.compare)
    keys = ("jobs", "data", "deployments")
    return replace(p, compare={**{k: t.details.get(k) for k in keys}, "at": at})


def _resumed(p: RolloutProgress, t: Transition, at: str) -> RolloutProgress:
    baking = p.step >= 0 or p.mirror is not None  # a step or the shadow stage: its bake starts again
    return replace(p, paused=None, held=None, step_started=at if baking else p.step_started)


@dataclass(frozen=True)
class Kind:
    """One kind of transition, all the service does differently for it in one row.

    ``action``: its decision record's action; ``prefix``: its record id's; ``shows``: the state the
    reconciler's report (and the stepper's answer to an operator) says once it is carried out;
    ``then``: how its commit changes the progress, None when it ends the rollout (the slot is freed
    and the model's retirement becomes due); ``promotes``: the candidate takes the endpoint (its
    monitors follow it; the traffic it replaced is kept for an operator's rollback); ``rolls_back``:
    the candidate is rejected (a refusal of its traffic is recorded, not replaced by a rollback);
    ``skipped``: its record's outcome is ``skipped`` (nothing changed); ``fails``: it is ``failed``
    (nothing changed, and someone should look); ``invokes``: the candidate is
    invoked with the smoke test's sample requests before it is recorded (``smoke``: the smoke test,
    judged; ``load``: a synthetic load, counted; ``batch``: the comparison's batch jobs started), by
    :mod:`handlers.rollout.effects`."""

    name: str
    action: str
    prefix: str
    shows: str
    then: Rule | None
    promotes: bool = False
    rolls_back: bool = False
    skipped: bool = False
    invokes: str | None = None
    fails: bool = False


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("step", "rollout", "rs", "stepped", _stepped),
        # the shadow stage (deploy.rollout.mirror): the candidate gets mirrored traffic, no live traffic
        Kind("mirror", "rollout", "rm", "mirroring", _mirrored),
        Kind("hold", "rollout", "rh", "held", _held, skipped=True),
        Kind("promote", "promote", "pr", "promoted", None, promotes=True),
        Kind("rollback", "rollback", "rb", "rolled_back", None, rolls_back=True),
        # an operator's: the reconciler leaves the rollout as it is until it is resumed
        Kind("pause", "pause", "pa", "paused", _paused),
        # an operator's: the step goes on, its bake restarted
        Kind("resume", "resume", "re", "resumed", _resumed),
        # an operator's: the candidate gets 100% now
        Kind("promote-now", "promote", "pn", "promoted", None, promotes=True),
        # an operator's: the original (or the kept) traffic back
        Kind("manual-rollback", "rollback", "mr", "rolled_back", None, rolls_back=True),
        # the candidate answered its smoke test (deploy.rollout.smoke) at 0%: the rollout goes on
        Kind("smoke", "rollout", "sm", "smoke_passed", _smoked, invokes="smoke"),
        # the candidate failed its smoke test: rolled back before any traffic (it keeps 0%)
        Kind("smoke-failed", "rollback", "sf", "smoke_failed", None, rolls_back=True),
        # a step whose bake is over with too few requests gets synthetic ones (deploy.rollout.smoke.load)
        Kind("load", "rollout", "ld", "loaded", _loaded, invokes="load"),
        # a batch candidate's comparison (deploy.batch_endpoint.compare): champion and candidate each score
        # the same data asset in a batch job; the rollout waits for both
        Kind("compare", "rollout", "cm", "comparing", _compared, invokes="batch"),
        # the comparison judged the candidate no better: not switched, a recorded skip (it is retired)
        Kind("reject", "rollback", "rj", "rejected", None, rolls_back=True, skipped=True),
        # the comparison could not judge (a job failed, timed out, or could not start): not switched
        Kind("compare-failed", "rollback", "cf", "compare_failed", None, rolls_back=True, fails=True),
    )
}

# the decision actions of rollouts, read by retirement (handlers.rollout.retire) and `retrain why`:
# those that start or move a rollout of the deployment they name (after one of these, a rollback
# before it no longer says the deployment is rejected), those that demote the deployments that served,
# those that reject a candidate
ROLLS_OUT = frozenset({"deploy"} | {k.action for k in KINDS.values() if not k.rolls_back})
PROMOTIONS = frozenset(k.action for k in KINDS.values() if k.promotes)
ROLLBACKS = frozenset(k.action for k in KINDS.values() if k.rolls_back)
ACTIONS = frozenset(k.action for k in KINDS.values())
