"""Envelopes: the wire shapes the service reads, turned into signals.

An :class:`Envelope` is one delivered event in either Event Grid schema (the Event Grid
schema or CloudEvents 1.0), with its ``data`` read case-insensitively; :func:`parse_events` and
:func:`parse_body` read a webhook body of them, :func:`parse_alert` an Azure Monitor alert (common alert
schema). :func:`to_signal` turns an envelope into one of the signal types of :mod:`handlers.signals`;
anything the service does not act on becomes ``Ignored`` with the reason, so that every event has an answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers import jsonin
from handlers.errors import InvalidInput
from handlers.keys import as_str, ci_get, finite
from handlers.signals import (
    ALERT,
    BLOB_CREATED,
    DRIFT,
    FINISHED_STATUSES,
    ML_EVENT_TYPES,
    MODEL_REGISTERED,
    NOTIFICATION_PREFIX,
    RUN_COMPLETED,
    RUN_STATUS,
    UPSTREAM_PROMOTED,
    VALIDATION,
    AlertFired,
    BlobCreated,
    DriftDetected,
    Ignored,
    ModelDeployed,
    ModelRegistered,
    RegistryVersion,
    RunFinished,
    Signal,
    Trigger,
)

MONITOR_BREACH_TAG = "azureml_modelmonitor_threshold_breached"
_SIGNAL_IN_BREACH = re.compile(r"signal\s+'([^']+)'", re.IGNORECASE)
# Markers of a run that is a step of a pipeline or a child of a sweep/AutoML parent.
_CHILD_PROPERTY_KEYS = ("azureml.pipelinerunid", "azureml.parentrunid", "azureml.nodeid")
_CHILD_TEMPLATES = ("automl_child", "hyperdrive_child")


@dataclass(frozen=True)
class Envelope:
    """One delivered event, schema-independent."""

    event_id: str
    event_type: str
    source: str
    data: Mapping[str, Any]
    schema: str  # "eventgrid" or "cloudevents"
    subject: str = ""  # what the event is about, in its source (a blob's container and name, for storage)

    def get(self, *names: str) -> Any:
        return ci_get(self.data, *names)


# --------------------------------------------------------------------------- envelopes


def envelope_from_dict(raw: Mapping[str, Any]) -> Envelope:
    """Read one event in either schema. Raises InvalidInput naming the missing field."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            f"each event must be a JSON object, got {type(raw).__name__}; "
            "send an array of Event Grid or CloudEvents 1.0 events"
        )
    is_cloud = "specversion" in raw or ("type" in raw and "eventType" not in raw)
    if is_cloud:
        event_type, source, schema = raw.get("type"), raw.get("source"), "cloudevents"
        type_name = "type"
    else:
        event_type, source, schema = raw.get("eventType"), raw.get("topic"), "eventgrid"
        type_name = "eventType"
    event_id = raw.get("id")
    missing = [name for name, value in (("id", event_id), (type_name, event_type)) if not value]
    if missing:
        raise InvalidInput(
            f"event is missing {', '.join(repr(m) for m in missing)}; an {schema} event needs 'id' and '{type_name}'"
        )
    data = raw.get("data")
    if isinstance(data, str):
        try:
            data = jsonin.loads(data, "event data")
        except InvalidInput:
            data = {"value": data}
    return Envelope(
        event_id=str(event_id),
        event_type=str(event_type),
        source=str(source or ""),
        data=data if isinstance(data, Mapping) else {},
        schema=schema,
        subject=str(raw.get("subject") or "")[:2000],
    )


def parse_events(body: bytes | str | Any) -> list[Envelope | InvalidInput]:
    """A webhook body, event by event: each item's envelope, or the InvalidInput that says what is
    wrong with that item (one bad event does not take the others down). Raises InvalidInput when the
    body itself is not a non-empty JSON array of events (or a single event object)."""
    if isinstance(body, (bytes, str)):
        body = jsonin.loads(body or b"null", "a JSON array of events")
    if isinstance(body, Mapping):
        body = [body]
    if not isinstance(body, list) or not body:
        raise InvalidInput("body must be a non-empty JSON array of events (or a single event object)")
    out: list[Envelope | InvalidInput] = []
    for item in body:
        try:
            out.append(envelope_from_dict(item))
        except InvalidInput as exc:
            out.append(exc)
    return out


def parse_body(body: bytes | str | Any) -> list[Envelope]:
    """Parse a webhook body whose every event must be readable: the first bad one raises InvalidInput."""
    out = []
    for item in parse_events(body):
        if isinstance(item, InvalidInput):
            raise item
        out.append(item)
    return out


# --------------------------------------------------------------------------- signals


def workspace_key(resource_id: str) -> str:
    """Normalise a workspace resource id (topic/source) for comparison: lower case, no slashes at ends."""
    return resource_id.strip().strip("/").lower()


def _trigger(env: Envelope) -> Trigger:
    return Trigger(source=env.source, event_id=env.event_id, event_type=env.event_type)


def _str_map(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = jsonin.loads(value, "run tags")
        except InvalidInput:
            return {}
    if not isinstance(value, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _is_child_run(run_id: str, props: Mapping[str, Any], run_type: Any) -> bool:
    for key in _CHILD_PROPERTY_KEYS:
        parent = ci_get(props, key)
        if parent and str(parent) != run_id:
            return True
    template = str(ci_get(props, "runTemplate", "run_template") or "").lower()
    if template in _CHILD_TEMPLATES:
        return True
    return str(run_type or "").lower() in ("azureml.steprun", "azureml.stepruns")


def to_signal(env: Envelope, workspaces: frozenset[str] | None = None) -> Signal:
    """Turn one envelope into a signal. ``workspaces``: the normalised workspace ids to accept."""
    trigger = _trigger(env)
    if env.event_type == VALIDATION:  # the webhook answers it before the service sees an event
        return Ignored(
            trigger,
            "a subscription validation event is a handshake, answered by the webhook (POST /api/events) "
            "when Event Grid sends it; there is nothing to decide",
        )
    if env.event_type == BLOB_CREATED:  # which accounts count is the policy's (retrain.on.data): decide says
        return _blob_signal(env, trigger)
    if env.event_type.startswith(NOTIFICATION_PREFIX):  # whose source counts is the policy's: decide says
        return _upstream_signal(env, trigger)
    if env.event_type not in ML_EVENT_TYPES:
        return Ignored(trigger, f"event type {env.event_type!r} is not an Azure ML event this service handles")
    if workspaces is not None and workspace_key(env.source) not in workspaces:
        return Ignored(
            trigger,
            f"event source {env.source!r} is not a workspace this service is configured for",
        )
    ws = env.source
    if env.event_type == DRIFT:
        monitor = env.get("DataDriftName") or env.get("DataDriftId")
        if not monitor:
            return Ignored(trigger, "drift event without DataDriftName: cannot tell which monitor fired")
        raw_coefficient = env.get("DriftCoefficient")
        coefficient = finite(raw_coefficient)
        return DriftDetected(
            trigger=trigger,
            workspace=ws,
            monitor=str(monitor),
            signal_name=None,
            coefficient=coefficient,
            generation="v1",
            detail=f"data drift monitor {monitor!s} reported drift coefficient {coefficient}",
            event_data=dict(env.data),
            coefficient_raw=raw_coefficient,
        )
    if env.event_type in (RUN_STATUS, RUN_COMPLETED):
        return _run_signal(env, trigger, ws)
    if env.event_type == MODEL_REGISTERED:
        name = env.get("ModelName")
        version = as_str(env.get("ModelVersion"))
        if not name or version is None:
            return Ignored(trigger, "model registration event without ModelName and ModelVersion")
        tags = env.get("ModelTags")
        return ModelRegistered(trigger, ws, str(name), version, tags if isinstance(tags, Mapping) else {})
    # MODEL_DEPLOYED
    ids = env.get("ModelIds") or ""
    model_ids = tuple(part.strip() for part in str(ids).split(",") if part.strip())
    return ModelDeployed(trigger, ws, str(env.get("ServiceName") or ""), model_ids)


_REGISTRY_VERSION = re.compile(
    r"^azureml://registries/([A-Za-z0-9][A-Za-z0-9_-]{0,63})/models/([A-Za-z0-9_.-]{1,255})/versions/([A-Za-z0-9_.-]{1,64})$"
)


def _upstream_signal(env: Envelope, trigger: Trigger) -> Signal:
    """An upstream retrain service's notification (a CloudEvent of its topic, :mod:`handlers.notify`): its
    promotion, shared into a registry, names the registry version (``data.details.shared.id``). Nothing
    else in it is used: the version is read again from the registry, and the source is judged by decide."""
    if env.event_type != UPSTREAM_PROMOTED:
        return Ignored(
            trigger,
            f"a retrain service's notification {env.event_type[:120]!r}: only its promotions "
            f"({UPSTREAM_PROMOTED}) are picked up",
        )
    details = env.get("details")
    shared = ci_get(details, "shared") if isinstance(details, Mapping) else None
    shared = shared if isinstance(shared, Mapping) else {}
    outcome = str(ci_get(shared, "outcome") or "none")[:40]
    if outcome not in ("shared", "shared already"):
        return Ignored(
            trigger,
            f"the promotion {str(env.get('id') or '?')[:80]} was not shared into a registry (shared: {outcome!r}): "
            "nothing to pick up",
        )
    match = _REGISTRY_VERSION.match(str(ci_get(shared, "id") or ""))
    if match is None:
        return Ignored(
            trigger,
            "the promotion's details.shared.id is not a registry model version "
            "(azureml://registries/<registry>/models/<model>/versions/<version>): nothing to pick up",
        )
    promotion = env.get("id")
    return RegistryVersion(
        trigger, match[1], match[2], match[3], str(promotion)[:120] if isinstance(promotion, str) else None
    )


_BLOB_SUBJECT = re.compile(r"^/?blobServices/default/containers/([^/]+)/blobs/(.+)$")


def _blob_signal(env: Envelope, trigger: Trigger) -> Signal:
    """A storage account's BlobCreated: the subject (``/blobServices/default/containers/<c>/blobs/<name>``)
    names the container and the blob, in both schemas; the topic (source) is the account."""
    match = _BLOB_SUBJECT.match(env.subject)
    if not match or not env.source:
        return Ignored(
            trigger,
            f"BlobCreated event without a blob subject and a storage account source (subject {env.subject[:200]!r}): "
            "cannot tell which blob was created",
        )
    return BlobCreated(trigger, env.source.strip().rstrip("/"), match.group(1), match.group(2))


def _run_signal(env: Envelope, trigger: Trigger, ws: str) -> Signal:
    tags = _str_map(env.get("runTags"))
    props = env.get("runProperties")
    props = props if isinstance(props, Mapping) else {}
    run_id = str(env.get("runId") or "")
    experiment = str(env.get("experimentName") or "")
    status = "completed" if env.event_type == RUN_COMPLETED else str(env.get("runStatus") or "").lower()
    breach = ci_get(tags, MONITOR_BREACH_TAG)
    if env.event_type == RUN_STATUS and breach:
        if status != "completed":
            # A monitor run that finds a breach tags it and completes (azureml-assets,
            # evaluate_metrics_threshold); a failed or canceled run with the tag measured nothing to act on.
            return Ignored(
                trigger,
                f"run {run_id or '?'} of experiment {experiment!r} carries a model-monitoring breach tag but is "
                f"{status or 'in an unknown status'}: only a monitor run that completed counts",
            )
        match = _SIGNAL_IN_BREACH.search(str(breach))
        return DriftDetected(
            trigger=trigger,
            workspace=ws,
            monitor=experiment,
            signal_name=match.group(1) if match else None,
            coefficient=None,
            generation="v2",
            detail=str(breach)[:300],
            event_data=dict(env.data),
            run_tags=tags,
        )
    if not run_id:
        return Ignored(trigger, "run event without runId")
    if status not in FINISHED_STATUSES:
        return Ignored(trigger, f"run {run_id} changed status to {status or 'unknown'}: not a finished run")
    if env.event_type == RUN_STATUS and status == "completed":
        # RunCompleted is the event for successful completions; acting on both would double-count.
        return Ignored(trigger, f"run {run_id} completed: handled from its RunCompleted event")
    return RunFinished(
        trigger=trigger,
        workspace=ws,
        run_id=run_id,
        experiment=experiment,
        status=status,
        is_child=_is_child_run(run_id, props, env.get("runType")),
        run_tags=tags,
        run_properties=dict(props),
    )


# --------------------------------------------------------------------------- alerts

COMMON_ALERT_SCHEMA = "azureMonitorCommonAlertSchema"
ALERT_EVENT_TYPE = "AzureMonitor.Alert"


def parse_alert(body: bytes | str) -> AlertFired:
    """An Azure Monitor action-group webhook body in the common alert schema."""
    raw = jsonin.loads(body or b"null", "an alert in the common alert schema")
    if not isinstance(raw, Mapping) or raw.get("schemaId") != COMMON_ALERT_SCHEMA:
        raise InvalidInput(
            f"expected schemaId {COMMON_ALERT_SCHEMA!r}; enable the common alert schema on the action group's webhook"
        )
    data = raw.get("data")
    essentials = data.get("essentials") if isinstance(data, Mapping) else None
    if not isinstance(essentials, Mapping):
        raise InvalidInput("alert without data.essentials; send the common alert schema")
    rule, alert_id = essentials.get("alertRule"), essentials.get("alertId")
    condition = str(essentials.get("monitorCondition") or "")
    missing = [k for k, v in (("alertRule", rule), ("alertId", alert_id), ("monitorCondition", condition)) if not v]
    if missing:
        raise InvalidInput(f"data.essentials is missing {', '.join(missing)}")
    targets = essentials.get("alertTargetIDs") or []
    # One alert instance notifies once when it fires and once when it resolves: both are events.
    event_id = f"{str(alert_id).rstrip('/').rsplit('/', 1)[-1]}:{condition.lower()}"
    return AlertFired(
        trigger=Trigger(source="azure-monitor", event_id=event_id, event_type=ALERT_EVENT_TYPE, channel=ALERT),
        rule=str(rule),
        condition=condition,
        severity=str(essentials.get("severity") or ""),
        signal_type=str(essentials.get("signalType") or ""),
        targets=tuple(str(t) for t in targets) if isinstance(targets, list) else (),
        alert_id=str(alert_id)[:400],
        fired_at=str(essentials.get("firedDateTime") or "")[:40],
    )
