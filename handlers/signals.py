"""Signals: the normalized inputs of the service, built from events, alerts and requests.

Each way in has a channel (:data:`CHANNELS`) and a :class:`Trigger` that says where a signal came
from; :func:`claim_key` names its claim in the ledger. :mod:`handlers.envelopes` reads the wire shapes
(Event Grid and CloudEvents deliveries, Azure Monitor alerts) into the signal types below; anything the
service does not act on becomes :class:`Ignored` with the reason, so that every event has an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers.keys import ci_get, digest

ML = "Microsoft.MachineLearningServices."
DRIFT = ML + "DatasetDriftDetected"
RUN_COMPLETED = ML + "RunCompleted"
RUN_STATUS = ML + "RunStatusChanged"
MODEL_REGISTERED = ML + "ModelRegistered"
MODEL_DEPLOYED = ML + "ModelDeployed"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
ML_EVENT_TYPES = (DRIFT, RUN_COMPLETED, RUN_STATUS, MODEL_REGISTERED, MODEL_DEPLOYED)
BLOB_CREATED = "Microsoft.Storage.BlobCreated"  # a storage account's system topic: new data (retrain.on.data)
# An upstream (dev) service's notification of a promotion (handlers.notify: retrain.decision.<action>.<outcome>),
# delivered from its notification topic: what a downstream (prod) service picks registry versions up from.
UPSTREAM_PROMOTED = "retrain.decision.promote.submitted"
NOTIFICATION_PREFIX = "retrain.decision."


# Tags that this service sets on every job it submits: they tie a run to a model and a decision.
TAG_MODEL = "retrain_model"
TAG_DECISION = "retrain_decision"
TAG_TRIGGER = "retrain_trigger"
TAG_SERVICE = "retrain_service"

FAILED_STATUSES = frozenset({"failed", "canceled", "cancelled", "notresponding"})
# The run statuses (lower case) after which a run does nothing more: what RunFinished stands for.
FINISHED_STATUSES = FAILED_STATUSES | {"completed"}


# The ways in, each a claim namespace of its own (:func:`claim_key`): what an event posted to the
# webhook says (its topic, type and id) can never name a claim of the HTTP API, an alert or the reconciler.
EVENT_GRID = "event_grid"  # Event Grid deliveries (the trigger, the webhook, replays of dead letters)
ALERT = "alert"  # Azure Monitor alerts (POST /api/alerts)
MANUAL = "manual"  # POST /api/models/{model}/retrain, /deploy
OPERATOR = "operator"  # rollback, promote, pause, resume (HTTP API and command line)
RECONCILER_CHANNEL = "reconciler"  # the reconciler's catch of a run whose event was missed
CHANNELS = (EVENT_GRID, ALERT, MANUAL, OPERATOR, RECONCILER_CHANNEL)
# The key space of each channel. The HTTP API's routes share one: an Idempotency-Key names one request
# of a model, whichever route it was sent to.
_KEY_SPACES = {ALERT: "alert", MANUAL: "api", OPERATOR: "api", RECONCILER_CHANNEL: "reconciler"}


@dataclass(frozen=True)
class Trigger:
    """Where a signal came from; carried into every decision for the audit trail. A manual request's
    trigger also says who asked (``caller``: what the platform vouched for) and which request it was
    (``request``: a digest of the route, the model and the body, to which its idempotency key is bound).
    ``channel``: the way it came in (one of :data:`CHANNELS`), which names its claim's key space."""

    source: str
    event_id: str
    event_type: str
    caller: tuple[tuple[str, str], ...] = ()
    request: str | None = None
    channel: str = EVENT_GRID

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "event_id": self.event_id, "event_type": self.event_type}
        if self.caller:
            out["caller"] = dict(self.caller)
        if self.request:
            out["request"] = self.request
        if self.channel != EVENT_GRID:
            out["channel"] = self.channel
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trigger:
        caller = data.get("caller")
        return cls(
            str(data["source"]),
            str(data["event_id"]),
            str(data["event_type"]),
            tuple((str(k), str(v)) for k, v in caller.items()) if isinstance(caller, Mapping) else (),
            None if data.get("request") is None else str(data["request"]),
            str(data.get("channel") or EVENT_GRID),
        )


def claim_key(trigger: Trigger) -> str:
    """The ledger key of a trigger's claim. Event Grid's is a digest of source, type and id, as it
    always was (a redelivery in flight across an upgrade still finds its claim); every other channel's
    starts with its key space and a dot, which no such digest (hex) does. The HTTP API's is the model
    and the Idempotency-Key alone (``event_id``): one key, one request, whatever the route."""
    if trigger.channel == EVENT_GRID:
        return digest(trigger.source.lower(), trigger.event_type, trigger.event_id, length=32)
    space = _KEY_SPACES.get(trigger.channel)
    if space is None:
        raise ValueError(f"unknown trigger channel {trigger.channel!r}; one of {', '.join(CHANNELS)}")
    if space == "api":
        return f"{space}.{digest(space, trigger.event_id, length=32)}"
    return f"{space}.{digest(space, trigger.source.lower(), trigger.event_type, trigger.event_id, length=32)}"


@dataclass(frozen=True)
class DriftDetected:
    trigger: Trigger
    workspace: str
    monitor: str
    signal_name: str | None
    coefficient: float | None
    generation: str  # "v1" (DatasetDriftDetected) or "v2" (model monitoring breach)
    detail: str
    event_data: Mapping[str, Any] = field(default_factory=dict)
    run_tags: Mapping[str, str] = field(default_factory=dict)
    coefficient_raw: Any = None  # DriftCoefficient as the event gave it (for the reason when it is no number)


@dataclass(frozen=True)
class RunSeen:
    """A run as the workspace reports it when asked (not as an event tells of it): ``found`` False when
    the workspace has no run of that name."""

    found: bool
    status: str = ""  # as Azure ML spells it: Completed, Failed, Running, ...
    experiment: str = ""
    display_name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    problem: str = ""  # why the workspace would not say (a refusal): nothing is acted on


@dataclass(frozen=True)
class RunFinished:
    trigger: Trigger
    workspace: str
    run_id: str
    experiment: str
    status: str  # lower-case: completed, failed, canceled, ...
    is_child: bool
    run_tags: Mapping[str, str]
    run_properties: Mapping[str, Any]

    ours: bool = False  # verified: the ledger holds the retrain decision its tag names, whose job is this run
    seen: RunSeen | None = None  # the run re-read from the workspace (an upstream run, retrain.on.runs)

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    @property
    def claims_service(self) -> bool:
        """The run carries this service's decision tag: what anyone who can tag a run can claim, so
        it counts only once the ledger confirms it (``ours``)."""
        return bool(ci_get(self.run_tags, TAG_DECISION))


@dataclass(frozen=True)
class BlobCreated:
    """A blob created or replaced in a storage account (its system topic's ``Microsoft.Storage.BlobCreated``):
    ``account`` the account's resource id (the event's topic or source), ``container`` and ``blob`` (its
    name, a path) read from the event's subject."""

    trigger: Trigger
    account: str
    container: str
    blob: str


@dataclass(frozen=True)
class RegistryVersion:
    """A model version of an Azure ML registry to pick up (a downstream environment, :mod:`handlers.pickup`):
    told of by an upstream service's promotion notification (``trigger.channel`` event_grid: its source is
    the notification's, checked against the policy) or found by the reconciler polling the registry
    (channel reconciler). What it names is only a hint: the version is read again from the registry."""

    trigger: Trigger
    registry: str
    model: str
    version: str
    promotion: str | None = None  # the upstream's promote record id, as the notification named it


@dataclass(frozen=True)
class ModelRegistered:
    trigger: Trigger
    workspace: str
    model_name: str
    model_version: str
    tags: Mapping[str, Any]


@dataclass(frozen=True)
class ModelDeployed:
    trigger: Trigger
    workspace: str
    service_name: str
    model_ids: tuple[str, ...]


@dataclass(frozen=True)
class ManualRequest:
    trigger: Trigger
    model: str
    action: str  # "retrain" or "deploy"
    reason: str
    dry_run: bool = False
    force: bool = False
    inputs: Mapping[str, Any] = field(default_factory=dict)
    version: str | None = None


@dataclass(frozen=True)
class OperatorRequest:
    """``action`` (rollback, promote, pause or resume: :data:`handlers.operate.ACTIONS`) on ``model``'s
    rollout, asked by ``trigger.caller``."""

    trigger: Trigger
    model: str
    action: str
    reason: str


@dataclass(frozen=True)
class AlertFired:
    """An Azure Monitor alert (common alert schema) that fired or resolved."""

    trigger: Trigger
    rule: str
    condition: str  # Fired or Resolved
    severity: str
    signal_type: str
    targets: tuple[str, ...]
    alert_id: str = ""  # essentials.alertId: the alert instance's resource id
    fired_at: str = ""  # essentials.firedDateTime, as sent

    @property
    def fired(self) -> bool:
        return self.condition.lower() == "fired"


@dataclass(frozen=True)
class Ignored:
    """An event the service records but does not act on, with why."""

    trigger: Trigger
    reason: str


Signal = (
    AlertFired
    | BlobCreated
    | DriftDetected
    | RunFinished
    | ModelRegistered
    | ModelDeployed
    | ManualRequest
    | RegistryVersion
    | Ignored
)
