"""Traces and metrics: with the OpenTelemetry SDK's in-memory exporter and reader installed (never the
Azure Monitor exporter, which would reach the internet), a delivery and a reconciler pass are spans
with the event id, model, decision id and outcome; the Azure SDK calls made inside are their child
spans; decisions are counted by action and outcome. With telemetry off nothing of OpenTelemetry is
imported, and importing the app with a connection string set loads neither the distro nor the SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from function_app import telemetry
from handlers import guards
from handlers.notify import notification_id
from tests.conftest import REPO, Client
from tests.topic_receiver import TopicReceiver
from tests.world import MODEL, World


class Exporters:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def decisions(self) -> dict[tuple[str, str], int]:
        """The counter retrain.decisions, by (action, outcome)."""
        counts: dict[tuple[str, str], int] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "retrain.decisions":
                        continue
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        attrs = dict(point.attributes or {})
                        counts[(str(attrs["action"]), str(attrs["outcome"]))] = int(point.value)  # type: ignore[union-attr]
        return counts


@pytest.fixture(scope="module")
def installed() -> Iterator[Exporters]:
    """The SDK's providers, installed once (OpenTelemetry's global providers can be set only once)."""
    from azure.core.settings import settings

    exporters = Exporters()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporters.spans))
    telemetry.install(tracer, MeterProvider(metric_readers=[exporters.metrics]))
    yield exporters
    telemetry.reset()
    settings.tracing_implementation = None  # type: ignore[assignment,unused-ignore]


@pytest.fixture
def exporters(installed: Exporters) -> Exporters:
    installed.spans.clear()
    return installed


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_delivery_is_one_span_with_its_decision_and_the_sdk_calls_as_children(
    exporters: Exporters, served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    _, client = served
    before = exporters.decisions().get(("retrain", "submitted"), 0)
    status, _, record = client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "by hand"})
    assert status == 202
    spans = exporters.finished()
    [delivery] = named(spans, "retrain.delivery")
    attributes = dict(delivery.attributes or {})
    assert attributes["retrain.kind"] == "manual"
    assert attributes["retrain.model"] == MODEL
    assert attributes["retrain.decision_id"] == record["id"]
    assert attributes["retrain.outcome"] == "submitted"
    assert attributes["retrain.event_id"] == record["trigger"]["event_id"]
    # the notification sent after the decision: the SDK's span, inside the delivery's
    [send] = [s for s in children(spans, delivery) if "EventGridPublisherClient" in s.name]
    assert children(spans, send), "the SDK's HTTP request is a span of its own, under its call"
    assert receiver.ids() == [notification_id(record["id"], "submitted")]
    assert exporters.decisions()[("retrain", "submitted")] == before + 1


def test_an_event_grid_delivery_carries_the_event_id(exporters: Exporters, served: tuple[World, Client]) -> None:
    from tests.builders import drift_event

    event = drift_event()
    status, _, _ = client_call(served[1], "/runtime/webhooks/eventgrid?functionName=on_workspace_event", [event])
    assert status == 200
    [delivery] = named(exporters.finished(), "retrain.delivery")
    attributes = dict(delivery.attributes or {})
    assert attributes["retrain.kind"] == "event_grid"
    assert attributes["retrain.event_id"] == event["id"]
    assert attributes["retrain.model"] == MODEL
    assert attributes["retrain.outcome"] == "submitted"


def client_call(client: Client, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    return client.call("POST", path, body, {"aeg-event-type": "Notification"})


def test_a_reconciler_pass_is_one_span_with_what_it_decided(
    exporters: Exporters, served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    world, _ = served
    world.ledger.update_model(MODEL, lambda s: guards.reserve(s, guards.ROLLOUT, "de-lost", world.clock(), None, None))
    world.clock.advance(minutes=5)  # a reservation whose worker died: released, with a failed decision
    before = exporters.decisions().get(("deploy", "failed"), 0)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    from function_app.triggers import reconciler

    app.register_functions(reconciler.bp)
    [fn] = app.get_functions()
    fn.get_user_function()(TimerRequest(past_due=False))
    [reconcile] = named(exporters.finished(), "retrain.reconcile")
    attributes = dict(reconcile.attributes or {})
    assert attributes["retrain.decision_id"] == "de-lost"
    assert attributes["retrain.model"] == MODEL
    assert attributes["retrain.outcome"] == "failed"
    assert attributes["retrain.notified"] == 1
    assert receiver.ids() == [notification_id("de-lost", "failed")]
    assert exporters.decisions()[("deploy", "failed")] == before + 1


def test_with_telemetry_off_a_span_is_a_no_op() -> None:
    code = (
        "import sys, json\n"
        "from function_app import telemetry\n"
        "with telemetry.span('retrain.delivery', kind='manual') as s:\n"
        "    s.set(model='m')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != telemetry.CONNECTION}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == []


def test_importing_the_app_with_a_connection_string_loads_no_telemetry_until_first_use() -> None:
    code = (
        "import sys, json\n"
        "import main\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor')))))\n"
    )
    env = {
        **os.environ,
        telemetry.CONNECTION: "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=https://example.invalid/",
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == []
