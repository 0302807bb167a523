"""Mapping the service's outcomes and errors to HTTP replies (JSON, as DESIGN.md says)."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from handlers import jsonin
from handlers.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    KeyReused,
    NotFound,
    PermanentError,
    PolicyError,
    TransientError,
    Unauthorized,
)

log = logging.getLogger(__name__)


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A JSON reply; strict JSON (no NaN or Infinity), which every parser reads."""
    return func.HttpResponse(
        json.dumps(body, default=str, allow_nan=False), status_code=status, mimetype="application/json", headers=headers
    )


def error(status: int, message: str, **extra: Any) -> func.HttpResponse:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if extra.get("retry_after") else None
    return reply({"error": message, **extra}, status, headers)


def from_exception(exc: Exception) -> func.HttpResponse:
    """Map a handled error to its reply. Transient problems are never 400/401/403/413."""
    if isinstance(exc, PolicyError):
        log.error("policy is invalid: %s", exc.problems)
        return error(503, "the service's policy file is invalid; fix it and redeploy", problems=exc.problems)
    if isinstance(exc, InvalidInput):
        return error(400, str(exc))
    if isinstance(exc, NotFound):
        return error(404, str(exc))
    if isinstance(exc, Conflict):
        return error(409, str(exc), hint=exc.hint)
    if isinstance(exc, Unauthorized):
        return error(401, str(exc))
    if isinstance(exc, Forbidden):
        return error(403, str(exc))
    if isinstance(exc, KeyReused):
        return error(422, str(exc))
    if isinstance(exc, TransientError):
        return error(503, str(exc), retry_after=int(exc.retry_after or 10))
    if isinstance(exc, PermanentError):
        return error(422, str(exc))
    raise exc


def json_body(req: func.HttpRequest) -> dict[str, Any]:
    raw = req.get_body() or b""
    if not raw.strip():
        return {}
    body = jsonin.loads(raw, "a JSON object")
    if not isinstance(body, dict):
        raise InvalidInput(f"body must be a JSON object, got {type(body).__name__}")
    return body
