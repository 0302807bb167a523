"""Traces and metrics through OpenTelemetry, to Application Insights by the Azure Monitor distro.

Off (a no-op that imports nothing) unless APPLICATIONINSIGHTS_CONNECTION_STRING is set; then
configured once per worker on first use, never at import: the distro and the SDK cost more than
the whole cold start (bench/run.py measures the import with the setting set). What is recorded:

- a span per delivery (``retrain.delivery``: the Event Grid trigger, the webhook, an alert, a manual
  request) and per reconciler pass (``retrain.reconcile``), with the event ids, models, decision ids
  and outcomes as attributes (``retrain.event_id``, ``retrain.model``, ``retrain.decision_id``,
  ``retrain.outcome``; lists when a delivery has several);
- the Azure SDK calls made inside (Azure ML, the ledger's tables, the metrics and logs queries, the
  notification topic) as child spans, through azure-core's OpenTelemetry tracing;
- the counter ``retrain.decisions`` of the decisions made, by ``action`` and ``outcome``.

With App Service's Entra ID ingestion (APPLICATIONINSIGHTS_AUTHENTICATION_STRING
``Authorization=AAD``, what infra sets) the exporter authenticates with the managed identity.
Tests install the OpenTelemetry SDK's own providers (:func:`install`), so no exporter is built.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

CONNECTION = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
NAME = "retrain"

_lock = threading.Lock()
_state: _Telemetry | None = None
_off = False  # configured already and found off


class _Telemetry:
    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        self.tracer = trace.get_tracer(NAME)
        self.decisions = metrics.get_meter(NAME).create_counter(
            "retrain.decisions", unit="{decision}", description="decisions made, by action and outcome"
        )


class Span:
    """What a caller may do with its span: add attributes, count decisions. A no-op when telemetry is off."""

    def __init__(self, span: Any = None, telemetry: _Telemetry | None = None) -> None:
        self._span = span
        self._telemetry = telemetry

    def set(self, **attributes: Any) -> None:
        if self._span is None:
            return
        for key, value in attributes.items():
            cleaned = _attribute(value)
            if cleaned is not None:
                self._span.set_attribute(f"{NAME}.{key}", cleaned)

    def decided(self, records: Iterable[Any], event_ids: Sequence[str] = (), *, count: bool = True) -> None:
        """The attributes of ``records`` (DecisionRecords) this span answered with, counted unless
        ``count`` is False (a duplicate delivery answers with decisions made before)."""
        if self._span is None or self._telemetry is None:
            return
        done = [r for r in records if r.outcome != "reserved"]
        events = list(event_ids) or [str(r.trigger.get("event_id") or "") for r in done]
        self.set(
            event_id=_one_or_all(events),
            model=_one_or_all([r.model or "" for r in done]),
            decision_id=_one_or_all([r.id for r in done]),
            outcome=_one_or_all([r.outcome for r in done]),
        )
        for r in done if count else ():
            self._telemetry.decisions.add(1, {"action": r.action, "outcome": r.outcome})

    def count(self, action: str, outcome: str) -> None:
        if self._telemetry is not None:
            self._telemetry.decisions.add(1, {"action": action, "outcome": outcome})


def _one_or_all(values: list[str]) -> str | list[str] | None:
    unique = list(dict.fromkeys(v for v in values if v))
    if not unique:
        return None
    return unique[0] if len(unique) == 1 else unique


def _attribute(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


def _configure() -> _Telemetry | None:
    """The worker's telemetry: None when APPLICATIONINSIGHTS_CONNECTION_STRING is not set."""
    global _state, _off
    if _state is not None or _off:
        return _state
    with _lock:
        if _state is not None or _off:
            return _state
        connection = os.environ.get(CONNECTION, "").strip()
        if not connection:
            _off = True
            return None
        from azure.monitor.opentelemetry import configure_azure_monitor

        options: dict[str, Any] = {"connection_string": connection, "logger_name": NAME}
        if "authorization=aad" in os.environ.get(AUTHENTICATION, "").replace(" ", "").lower():
            from function_app.adapters.clients import shared_credential  # the workers' own

            options["credential"] = shared_credential(os.environ.get("AZURE_CLIENT_ID") or None)
        try:
            configure_azure_monitor(**options)
        except ValueError as exc:  # a malformed connection string: telemetry off, deliveries unharmed
            log.warning("telemetry off: %s cannot be used: %s", CONNECTION, exc)
            _off = True
            return None
        _state = _Telemetry()
        log.info("telemetry on: traces and metrics to Application Insights")
        return _state


def install(tracer_provider: Any, meter_provider: Any) -> None:
    """Use these OpenTelemetry providers instead of the Azure Monitor distro (tests: in-memory
    exporters), with azure-core's tracing of SDK calls on, as the distro turns it on."""
    global _state, _off
    from azure.core.settings import settings
    from opentelemetry import metrics, trace

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    settings.tracing_implementation = "opentelemetry"
    with _lock:
        _state, _off = _Telemetry(), False


def reset() -> None:
    """Forget the configuration (tests): the next use reads the environment again."""
    global _state, _off
    with _lock:
        _state, _off = None, False


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span named ``name`` around the block (the current span's child), or a no-op."""
    telemetry = _configure()
    if telemetry is None:
        yield Span()
        return
    with telemetry.tracer.start_as_current_span(name) as current:
        handle = Span(current, telemetry)
        handle.set(**attributes)
        yield handle
