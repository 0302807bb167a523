"""The manual HTTP API: retrain or deploy a model, steer its rollout (rollback, promote, pause,
resume), freeze and unfreeze (the stop switch), read models and decisions, health."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC
from typing import Any

import azure.functions as func

from function_app.delivery import one_delivery
from function_app.runtime import get_retrainer, new_id
from function_app.settings import Settings
from function_app.triggers.callers import caller_of
from function_app.triggers.replies import error, from_exception, json_body, reply
from handlers.errors import InvalidInput, RetrainError
from handlers.retrainer import (
    MANUAL,
    OPERATOR,
    OUTCOMES,
    ManualRequest,
    OperatorRequest,
    Trigger,
    as_str,
    bound_request,
    from_iso,
    one_line,
)

log = logging.getLogger(__name__)

VERSION = "0.1.0"  # pyproject.toml's version (a test keeps them equal)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

_RETRAIN_KEYS = {"reason": str, "dry_run": bool, "force": bool, "inputs": dict}
_DEPLOY_KEYS = {"reason": str, "dry_run": bool, "force": bool, "version": (str, int)}
_OPERATE_KEYS = {"reason": str}


def _check_body(body: dict[str, Any], allowed: dict[str, Any]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    for key, kind in allowed.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise InvalidInput(
                f"field {key!r} must be {names.replace('str', 'a string').replace('bool', 'true or false').replace('dict', 'an object').replace('int', 'a number')}"
            )


def idempotency_key(headers: Any) -> str | None:
    """The request's ``Idempotency-Key``: 1-255 printable ASCII characters, or InvalidInput."""
    key = headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(32 <= ord(c) < 127 for c in key):
        raise InvalidInput(
            "header Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID is a good key); "
            f"got {len(key)} character(s)"
        )
    return str(key)


def _caller(req: func.HttpRequest) -> tuple[tuple[str, str], ...]:
    """Who sent a manual or operator request, as its trigger records it (:func:`caller_of`: the
    signed-in principal with the operator role, or the function key)."""
    settings = Settings.from_env()
    caller = caller_of(
        req.headers,
        app_service_auth=settings.app_service_auth,
        operator_role=settings.operator_role,
        platform_sign_in=settings.platform_sign_in,
    )
    return tuple((k, str(v)) for k, v in caller.items())


def _reason(body: dict[str, Any], example: str | None = None) -> str:
    """The body's ``reason``, one line of plain text (:func:`handlers.reasons.one_line`), or InvalidInput."""
    return one_line(body.get("reason"), "field 'reason'", example)


def request_digest(action: str, model: str, body: dict[str, Any]) -> str:
    """What an idempotency key is bound to: the route, the model and the body, canonically."""
    canonical = json.dumps({"action": action, "model": model, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _manual(req: func.HttpRequest, action: str, allowed: dict[str, Any]) -> func.HttpResponse:
    model = req.route_params.get("model", "")
    try:
        body = json_body(req)
        _check_body(body, allowed)
        caller = _caller(req)
        key = idempotency_key(req.headers)
        # A key is scoped to its model (the same key for another model is another request) and bound,
        # whatever the route, to the first request it came with and its caller (claim_key, Ledger.claim_event).
        request_id = f"{model}:{key}" if key is not None else new_id()
        request = ManualRequest(
            trigger=Trigger(
                source="http",
                event_id=request_id,
                event_type=f"ManualRequest.{action}",
                caller=caller,
                request=bound_request(request_digest(action, model, body), dict(caller)),
                channel=MANUAL,
            ),
            model=model,
            action=action,
            reason=_reason(body),
            dry_run=bool(body.get("dry_run", False)),
            force=bool(body.get("force", False)),
            inputs=body.get("inputs") or {},
            version=as_str(body.get("version")),
        )
        if action == "deploy" and not request.version:
            raise InvalidInput('field \'version\' is required: the model version to deploy, e.g. {"version": "7"}')
        with one_delivery("manual", event_id=request.trigger.event_id, model=model) as span:
            record = get_retrainer().manual(request)
            span.decided([record])
    except RetrainError as exc:
        return from_exception(exc)
    status = 202 if record.outcome == "submitted" else 422 if record.outcome == "failed" else 200
    return reply(record.to_dict(), status)


@bp.function_name("retrain_model")
@bp.route(route="models/{model}/retrain", methods=["POST"])
def retrain_model(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str, "dry_run": bool, "inputs": {...}, "force": bool}."""
    return _manual(req, "retrain", _RETRAIN_KEYS)


@bp.function_name("deploy_model")
@bp.route(route="models/{model}/deploy", methods=["POST"])
def deploy_model(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"version": str, "dry_run": bool, "reason": str, "force": bool}."""
    return _manual(req, "deploy", _DEPLOY_KEYS)


def _operate(req: func.HttpRequest, action: str) -> func.HttpResponse:
    """An operator's rollback, promote, pause or resume: who asked is recorded in the trigger, as
    for the other manual requests; 409 with the reason when the action does not apply."""
    model = req.route_params.get("model", "")
    try:
        body = json_body(req)
        _check_body(body, _OPERATE_KEYS)
        caller = _caller(req)
        key = idempotency_key(req.headers)
        request = OperatorRequest(
            trigger=Trigger(
                source="http",
                event_id=f"{model}:{key}" if key is not None else new_id(),
                event_type=f"ManualRequest.{action}",
                caller=caller,
                request=bound_request(request_digest(action, model, body), dict(caller)),
                channel=OPERATOR,
            ),
            model=model,
            action=action,
            reason=_reason(body),
        )
        with one_delivery("operator", event_id=request.trigger.event_id, model=model) as span:
            record = get_retrainer().operate(request)
            span.decided([record])
    except RetrainError as exc:
        return from_exception(exc)
    return reply(record.to_dict(), 422 if record.outcome == "failed" else 202 if record.details.get("traffic") else 200)


@bp.function_name("rollback_model")
@bp.route(route="models/{model}/rollback", methods=["POST"])
def rollback_model(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str}. The rollout in flight: original traffic back; none: the kept previous deployment."""
    return _operate(req, "rollback")


@bp.function_name("promote_model")
@bp.route(route="models/{model}/promote", methods=["POST"])
def promote_model(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str}. The rollout in flight skips its remaining steps: the candidate gets 100%."""
    return _operate(req, "promote")


@bp.function_name("pause_rollout")
@bp.route(route="models/{model}/pause", methods=["POST"])
def pause_rollout(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str}. The reconciler leaves the rollout in flight as it is until resumed."""
    return _operate(req, "pause")


@bp.function_name("resume_rollout")
@bp.route(route="models/{model}/resume", methods=["POST"])
def resume_rollout(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str}. The paused rollout goes on with its step, whose bake starts again."""
    return _operate(req, "resume")


_FREEZE_KEYS = {"reason": str, "models": list, "actions": list}


def _switch(req: func.HttpRequest, on: bool) -> func.HttpResponse:
    """The stop switch set or lifted, recorded per model with who asked (as the operator's routes)."""
    verb = "freeze" if on else "unfreeze"
    try:
        body = json_body(req)
        _check_body(body, _FREEZE_KEYS)
        reason = _reason(body, 'say why, e.g. {"reason": "incident 4711"}')
        lists = {k: body.get(k) for k in ("models", "actions")}
        for key, value in lists.items():
            if value is not None and not (value and all(isinstance(v, str) for v in value)):
                raise InvalidInput(f"field {key!r} must be a non-empty list of names, or left out (all)")
        caller = _caller(req)
        trigger = Trigger(
            source="http",
            event_id=new_id(),
            event_type=f"ManualRequest.{verb}",
            caller=caller,
            request=request_digest(verb, "*", body),
            channel=OPERATOR,
        )
        with one_delivery("operator", event_id=trigger.event_id, model="*") as span:
            records = get_retrainer().freeze(on, trigger, reason, models=lists["models"], actions=lists["actions"])
            span.decided(records)
    except RetrainError as exc:
        return from_exception(exc)
    return reply({"decisions": [r.to_dict() for r in records]})


@bp.function_name("freeze")
@bp.route(route="freeze", methods=["POST"])
def freeze(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str, "models"?: [str], "actions"?: ["retrain", "deploy", "promote"]}. The stop
    switch: no new retrain or deployment, rollouts hold their step (rollbacks go on), until unfrozen."""
    return _switch(req, True)


@bp.function_name("unfreeze")
@bp.route(route="unfreeze", methods=["POST"])
def unfreeze(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str, "models"?: [str]}. The stop switch lifted."""
    return _switch(req, False)


def _decide(req: func.HttpRequest, approve: bool) -> func.HttpResponse:
    """A deploy waiting for approval approved or rejected, recorded with who asked (as the operator's
    routes record it) and why."""
    verb = "approve" if approve else "reject"
    decision_id = req.route_params.get("id", "")
    try:
        body = json_body(req)
        _check_body(body, _OPERATE_KEYS)
        reason = _reason(body, f'say why you {verb} it, e.g. {{"reason": "metrics look right"}}')
        caller = _caller(req)
        trigger = Trigger(
            source="http",
            event_id=new_id(),
            event_type=f"ManualRequest.{verb}",
            caller=caller,
            request=request_digest(verb, decision_id, body),
            channel=OPERATOR,
        )
        with one_delivery("operator", event_id=trigger.event_id, model="*") as span:
            record = get_retrainer().approve(decision_id, trigger, reason, approve=approve)
            span.decided([record])
    except RetrainError as exc:
        return from_exception(exc)
    return reply(record.to_dict(), 202 if record.outcome == "submitted" else 422 if record.outcome == "failed" else 200)


@bp.function_name("approve_decision")
@bp.route(route="decisions/{id}/approve", methods=["POST"])
def approve_decision(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str}. The deploy waiting for approval is carried out (once); four eyes: not
    by the caller who asked for it."""
    return _decide(req, True)


@bp.function_name("reject_decision")
@bp.route(route="decisions/{id}/reject", methods=["POST"])
def reject_decision(req: func.HttpRequest) -> func.HttpResponse:
    """Body: {"reason": str}. The deploy waiting for approval is released, nothing deployed."""
    return _decide(req, False)


@bp.function_name("list_models")
@bp.route(route="models", methods=["GET"])
def list_models(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return reply({"models": get_retrainer().models()})
    except RetrainError as exc:
        return from_exception(exc)


@bp.function_name("list_decisions")
@bp.route(route="decisions", methods=["GET"])
def list_decisions(req: func.HttpRequest) -> func.HttpResponse:
    """?model=&event_id=&outcome=&since=&limit=: the audit trail, newest first."""
    limit_text = req.params.get("limit", "50")
    # ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses
    if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 4 and 1 <= int(limit_text) <= 1000):
        return error(400, f"limit={limit_text[:40]!r}: give a whole number from 1 to 1000")
    outcome = req.params.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        return error(400, f"outcome={outcome[:40]!r}: give one of {', '.join(OUTCOMES)}")
    since_text = req.params.get("since") or None
    since = None
    if since_text is not None:
        try:
            since = from_iso(since_text)
        except ValueError:
            return error(400, f"since={since_text[:40]!r}: give an ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
        if since is not None and since.tzinfo is None:
            return error(400, f"since={since_text[:40]!r}: give the time zone, e.g. 2026-12-01T00:00:00Z")
        try:
            since = since.astimezone(UTC) if since is not None else None
        except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the first UTC time there is
            return error(400, f"since={since_text[:40]!r}: give a time between years 1 and 9999 in UTC")
    event_id = req.params.get("event_id") or None
    try:
        records = get_retrainer().decisions(
            req.params.get("model") or None, int(limit_text), event_id=event_id, outcome=outcome, since=since
        )
    except RetrainError as exc:
        return from_exception(exc)
    return reply({"decisions": [r.to_dict() for r in records]})


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness for anyone: status and version only. The configuration is behind a key (/api/config):
    the workspace id and model names are what a forged event would need."""
    try:
        Settings.from_env()
        get_retrainer()
    except (RetrainError, ValueError):
        log.exception("health: the service cannot start")
        return reply({"status": "misconfigured", "version": VERSION}, 503)
    return reply({"status": "ok", "version": VERSION})


@bp.function_name("config")
@bp.route(route="config", methods=["GET"])
def config(req: func.HttpRequest) -> func.HttpResponse:
    """The configuration summary (function key): no secrets, no connection strings."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        return reply({"status": "misconfigured", "error": str(exc)}, 503)
    try:
        service = get_retrainer()
    except RetrainError as exc:
        return reply({"status": "misconfigured", "error": str(exc), "settings": settings.summary()}, 503)
    return reply(
        {
            "status": "ok",
            "version": VERSION,
            "settings": settings.summary(),
            "backend": service.backend,
            "models": sorted(service.policy.models),
        }
    )
