"""Local development host: the Functions host's HTTP surface, served from the app's own functions.

It indexes the FunctionApp the way the worker does (import the root script, read each function's
bindings) and routes requests to the registered Python functions, so the code that runs here is
the code that runs in Azure:

- HTTP triggers under ``/api/<route>`` (route templates and methods from their bindings);
- Event Grid triggers under ``/runtime/webhooks/eventgrid?functionName=NAME``, answering the
  ``aeg-event-type: SubscriptionValidation`` handshake and delivering ``Notification`` batches one
  event at a time, as the Functions host does (POST only: other methods get 405). A function that
  raises gets a 500, so Event Grid (or ``retrain send``) would redeliver.

Function keys are not enforced locally (neither does Core Tools); in Azure the host enforces them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from handlers import jsonin
from handlers.errors import InvalidInput

log = logging.getLogger(__name__)

DEFAULT_PORT = 7071
ROUTE_PREFIX = "api"  # host.json extensions.http.routePrefix (a test keeps them equal)


@dataclass(frozen=True)
class HttpFunction:
    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    call: Callable[[func.HttpRequest], func.HttpResponse]


def _route_regex(route: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{[^}]+\})", route.strip("/")):
        if piece.startswith("{"):
            name = piece[1:-1].split(":")[0].rstrip("?")
            parts.append(f"(?P<{name}>[^/]+)")
        else:
            parts.append(re.escape(piece))
    return re.compile(f"^/{ROUTE_PREFIX}/" + "".join(parts) + "/?$")


_Index = tuple[list[HttpFunction], dict[str, Callable[..., Any]]]
_indexed: dict[int, _Index] = {}


def index_app(app: func.FunctionApp) -> _Index:
    """The HTTP routes and Event Grid functions, read from the bindings the host would receive.

    ``FunctionApp.get_functions()`` may run once per app (it refuses to see its names twice),
    as in the worker, so the index is kept per app."""
    if id(app) not in _indexed:
        _indexed[id(app)] = _index(app)
    return _indexed[id(app)]


def _index(app: func.FunctionApp) -> _Index:
    http: list[HttpFunction] = []
    eventgrid: dict[str, Callable[..., Any]] = {}
    for fn in app.get_functions():
        bindings = [json.loads(b) for b in fn.get_raw_bindings()]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        user = fn.get_user_function()
        name = str(fn.get_function_name())
        if trigger["type"] == "httpTrigger":
            route = str(trigger.get("route") or name)
            methods = frozenset(m.upper() for m in trigger.get("methods") or ("GET", "POST"))
            http.append(HttpFunction(name, methods, _route_regex(route), user))
        elif trigger["type"] == "eventGridTrigger":
            eventgrid[name] = user
    return http, eventgrid


def _event_object(raw: dict[str, Any]) -> func.EventGridEvent | func.CloudEvent:
    def when(text: Any) -> datetime | None:
        try:
            return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
        except ValueError:
            return None

    if "specversion" in raw:
        return func.CloudEvent(
            id=str(raw.get("id")),
            source=str(raw.get("source")),
            type=str(raw.get("type")),
            specversion=str(raw.get("specversion")),
            data=raw.get("data"),
            time=when(raw.get("time")),
            subject=raw.get("subject"),
        )
    return func.EventGridEvent(
        id=str(raw.get("id")),
        data=cast("dict[str, object]", raw.get("data")),  # the host passes whatever JSON `data` holds
        topic=str(raw.get("topic") or ""),
        subject=str(raw.get("subject") or ""),
        event_type=str(raw.get("eventType")),
        event_time=when(raw.get("eventTime")),
        data_version=str(raw.get("dataVersion") or ""),
    )


class Host:
    """Dispatches one request to the app's functions; independent of the HTTP server for tests."""

    def __init__(self, app: func.FunctionApp) -> None:
        self.http, self.eventgrid = index_app(app)

    def dispatch(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query))
        if parts.path.rstrip("/") == "/runtime/webhooks/eventgrid":
            if method != "POST":  # Event Grid delivers and validates with POST; nothing else is a delivery
                return (
                    405,
                    {"Allow": "POST", "Content-Type": "application/json"},
                    json.dumps({"error": f"{method} not allowed; Event Grid delivers with POST"}).encode(),
                )
            return self._eventgrid(params.get("functionName", ""), headers, body)
        allowed: set[str] = set()
        for fn in self.http:
            match = fn.pattern.match(parts.path)
            if not match:
                continue
            if method not in fn.methods:
                allowed |= fn.methods
                continue
            req = func.HttpRequest(
                method, url, headers=headers, params=params, route_params=match.groupdict(), body=body
            )
            try:
                resp = fn.call(req)
            except Exception as exc:  # the Functions host answers 500 for a function that raises
                log.exception("function %s failed", fn.name)
                error = {"error": f"function {fn.name} failed: {type(exc).__name__}"}
                return 500, {"Content-Type": "application/json"}, json.dumps(error).encode()
            out_headers = dict(resp.headers)
            out_headers.setdefault("Content-Type", resp.mimetype or "text/plain")
            return resp.status_code, out_headers, resp.get_body()
        if allowed:
            return (
                405,
                {"Allow": ", ".join(sorted(allowed)), "Content-Type": "application/json"},
                json.dumps({"error": f"{method} not allowed; use {', '.join(sorted(allowed))}"}).encode(),
            )
        return (
            404,
            {"Content-Type": "application/json"},
            json.dumps({"error": f"no function serves {parts.path}"}).encode(),
        )

    def _eventgrid(self, name: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        js = {"Content-Type": "application/json"}
        fn = self.eventgrid.get(name)
        if fn is None:
            return (
                404,
                js,
                json.dumps(
                    {"error": f"no Event Grid function named {name!r}; have: {', '.join(self.eventgrid)}"}
                ).encode(),
            )
        try:
            events = jsonin.loads(body or b"null", "a JSON array of Event Grid events")
        except InvalidInput as exc:
            return 400, js, json.dumps({"error": str(exc)}).encode()
        events = events if isinstance(events, list) else [events]
        kind = {k.lower(): v for k, v in headers.items()}.get("aeg-event-type", "Notification").lower()
        if kind == "subscriptionvalidation":
            code = (
                (events[0].get("data") or {}).get("validationCode") if events and isinstance(events[0], dict) else None
            )
            if not code:
                return 400, js, json.dumps({"error": "validation event without data.validationCode"}).encode()
            return 200, js, json.dumps({"validationResponse": code}).encode()
        for raw in events:
            if not isinstance(raw, dict):
                return 400, js, json.dumps({"error": "each event must be a JSON object"}).encode()
            try:
                fn(_event_object(raw))
            except Exception as exc:  # the host reports any function failure; Event Grid redelivers
                log.exception("function %s failed for event %s", name, raw.get("id"))
                return 500, js, json.dumps({"error": f"function {name} failed: {type(exc).__name__}: {exc}"}).encode()
        return 200, js, b""


def make_server(host: Host, port: int, address: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, out = host.dispatch(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_OPTIONS = do_PUT = do_DELETE = _serve  # noqa: N815 (names BaseHTTPRequestHandler dispatches to)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

    server = _Server((address, port), Handler)
    server.daemon_threads = True
    return server


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of clients (Event Grid delivering in parallel,
    # a storm test) overflows it and connections stall or are reset. The kernel caps it at somaxconn.
    request_queue_size = 1024


def load_local_settings(path: str = "local.settings.json") -> None:
    """Like Core Tools: Values of local.settings.json become environment variables (never overriding)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        values = json.load(fh).get("Values", {})
    for key, value in values.items():
        if value != "":
            os.environ.setdefault(key, str(value))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrain-host", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--script",
        default=os.environ.get("PYTHON_SCRIPT_FILE_NAME", "main.py"),
        help="the root script the worker imports (default: PYTHON_SCRIPT_FILE_NAME or main.py)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_local_settings()

    from function_app.runtime import APP_ROOT, get_retrainer
    from handlers.errors import PolicyError

    sys.path.insert(0, str(APP_ROOT))
    module = importlib.import_module(os.path.splitext(args.script)[0])
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        print(f"{args.script} must define exactly one FunctionApp, found {len(apps)}", file=sys.stderr)
        return 2
    try:
        service = get_retrainer()  # start-up validation: settings and policy
    except PolicyError as exc:
        print("the policy file is invalid:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    host = Host(apps[0])
    server = make_server(host, args.port)
    print(
        f"retrain local host on http://127.0.0.1:{args.port}  backend={service.backend}  "
        f"models={', '.join(service.policy.models)}\n"
        f"  HTTP functions: {', '.join(f.name for f in host.http)}\n"
        f"  Event Grid: /runtime/webhooks/eventgrid?functionName={'|'.join(host.eventgrid)}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
