"""Events in: the Event Grid trigger (AzureFunction destination), the Event Grid webhook route (both
schemas) and the Azure Monitor alert webhook (common alert schema)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import azure.functions as func

from function_app.delivery import one_delivery
from function_app.runtime import get_retrainer
from function_app.settings import Settings
from function_app.triggers.replies import error, from_exception, reply
from handlers.errors import InvalidInput, RetrainError, TransientError
from handlers.retrainer import VALIDATION, Envelope, Retrainer, envelope_from_dict, parse_events

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

EVENT_GRID_FUNCTION = "on_workspace_event"


def envelope_from_binding(event: func.EventGridEvent | func.CloudEvent) -> Envelope:
    """The same envelope whichever schema the event arrived in."""
    if isinstance(event, func.EventGridEvent):
        return envelope_from_dict(
            {
                "id": event.id,
                "eventType": event.event_type,
                "topic": event.topic,
                "subject": event.subject,
                "data": event.get_json(),
            }
        )
    return envelope_from_dict(
        {
            "specversion": event.specversion,
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "data": event.get_json(),
        }
    )


@bp.function_name(EVENT_GRID_FUNCTION)
@bp.event_grid_trigger(arg_name="event")
def on_workspace_event(event: func.EventGridEvent) -> None:
    """Workspace events from the Event Grid system topic. Raising makes Event Grid redeliver."""
    env = envelope_from_binding(event)
    with one_delivery("event_grid", event_id=env.event_id) as span:
        result = get_retrainer().deliver(env)  # TransientError propagates: redelivery
        span.decided(result.decisions, [env.event_id], count=result.status == "processed")
    log.info("event %s %s: %s, %d decision(s)", env.event_id, env.event_type, result.status, len(result.decisions))


@bp.function_name("events_webhook")
@bp.route(route="events", methods=["POST", "OPTIONS"])
def events_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Webhook delivery: Event Grid schema (validation event) or CloudEvents 1.0 (OPTIONS handshake)."""
    if req.method == "OPTIONS":
        origin = req.headers.get("WebHook-Request-Origin")
        if not origin:
            return error(400, "OPTIONS is the CloudEvents validation handshake; send a WebHook-Request-Origin header")
        return func.HttpResponse(
            status_code=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST"}
        )
    try:
        items = parse_events(req.get_body())
    except RetrainError as exc:
        return from_exception(exc)
    envelopes = [e for e in items if isinstance(e, Envelope)]
    validation = [e for e in envelopes if e.event_type == VALIDATION]
    if validation or req.headers.get("aeg-event-type", "").lower() == "subscriptionvalidation":
        code = validation[0].get("validationCode") if validation else None
        if not code:
            return error(400, "subscription validation event without data.validationCode")
        log.info("answering Event Grid subscription validation for event %s", validation[0].event_id)
        return reply({"validationResponse": code})
    if not envelopes:  # nothing in the body can be handled: say what is wrong with each
        problems = [str(e) for e in items if isinstance(e, InvalidInput)]
        return error(400, f"no event in the body can be read: {problems[0]}", problems=problems)
    try:
        retrainer = get_retrainer()
        budget = timedelta(seconds=Settings.from_env().deadline_seconds * BATCH_SHARE)
    except (RetrainError, ValueError) as exc:
        return from_exception(exc if isinstance(exc, RetrainError) else TransientError(str(exc)))
    return _deliver_batch(retrainer, items, budget)


# The share of RETRAIN_DEADLINE_SECONDS a batch may spend before it answers: the event in hand when the
# budget runs out still has the rest of the deadline (its retries are bounded by it, function_app/retry.py).
BATCH_SHARE = 0.8


def _deliver_batch(retrainer: Retrainer, items: list[Envelope | InvalidInput], budget: timedelta) -> func.HttpResponse:
    """Each event of a webhook batch on its own: one bad or failing event never takes the others
    down, and the reply says what happened to each. Any transient failure makes the reply 503, so
    that Event Grid delivers the batch again; the events already handled come back as duplicates.
    Event Grid waits 30 s whatever the batch's size: once ``budget`` has passed, the events not reached
    are ``deferred`` and the reply is a 503 too, so the redelivery finds what was done and goes on.
    Each delivery handles at least one event that was not done before, so redeliveries always get on."""
    results: list[dict[str, Any]] = []
    decided: list[Any] = []  # the decisions made now (not a duplicate's), for the span
    transient: TransientError | None = None
    deferred = 0
    progressed = False  # an event not done before was handled: once one was, the budget may end the batch
    clock = retrainer.clock
    started = clock()
    with one_delivery("webhook") as span:  # Event Grid waits 30 s for the whole batch
        for n, item in enumerate(items):
            if progressed and clock() - started >= budget:
                deferred = len(items) - n
                results.extend(_deferred(rest, n + i) for i, rest in enumerate(items[n:]))
                log.warning(
                    "webhook batch: %d of %d event(s) deferred to the redelivery after %.1f s",
                    deferred,
                    len(items),
                    (clock() - started).total_seconds(),
                )
                break
            if isinstance(item, InvalidInput):
                log.warning("webhook event %d of the batch is unreadable: %s", n, item)
                results.append({"index": n, "status": "rejected", "error": str(item)})
                continue
            try:
                result = retrainer.deliver(item)
                results.append(result.to_dict())
                progressed = progressed or result.status != "duplicate"
                decided.extend(result.decisions if result.status == "processed" else ())
            except TransientError as exc:
                log.warning("transient failure on event %s (%d of %d): %s", item.event_id, n + 1, len(items), exc)
                transient = transient or exc
                progressed = True
                results.append({"event_id": item.event_id, "status": "retry", "error": str(exc)})
        span.decided(decided, [e.event_id for e in items if isinstance(e, Envelope)])
    if transient is not None:
        return error(
            503,
            f"some events could not be handled now ({transient}); deliver the batch again",
            retry_after=int(transient.retry_after or 10),
            results=results,
        )
    if deferred:
        return error(
            503,
            f"{deferred} of {len(items)} event(s) were not reached within the {budget.total_seconds():g} s this "
            "batch may take (Event Grid waits 30 s); deliver the batch again: the events handled are duplicates",
            retry_after=1,
            results=results,
        )
    return reply({"results": results})


def _deferred(item: Envelope | InvalidInput, index: int) -> dict[str, Any]:
    if isinstance(item, InvalidInput):
        return {"index": index, "status": "rejected", "error": str(item)}
    return {"event_id": item.event_id, "status": "deferred"}


@bp.function_name("azure_monitor_alert")
@bp.route(route="alerts", methods=["POST"])
def azure_monitor_alert(req: func.HttpRequest) -> func.HttpResponse:
    """Azure Monitor action-group webhook, common alert schema. 5xx makes the action group retry."""
    try:
        with one_delivery("alert") as span:
            result = get_retrainer().alert(req.get_body())
            span.decided(result.decisions, [result.event_id], count=result.status == "processed")
    except RetrainError as exc:
        return from_exception(exc)
    return reply(result.to_dict())
