"""A worker that serves adopts its policy's models as it starts (:func:`handlers.wiring.start`): the
Table ledger lists each in its directory (the ``models`` table) then, not on the model's first event.
What that must keep, on Azurite: the fence against workers of the code before (a model's row
without a body, which that code cannot read), the takeover of a slot such a worker took, two
workers starting at once, the models' listing, a worker whose ledger cannot be reached as it starts,
the read-only commands writing nothing, and the requests a drift event costs (the bench's figures)."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline import PipelineRequest
from azure.data.tables import TableServiceClient

from bench.round_trips import COLD, STARTS, WARM, event_figures
from function_app import runtime
from function_app.adapters.table_entities import client_options, get_body
from function_app.adapters.table_ledger import TableLedger
from function_app.settings import Settings
from handlers import guards
from handlers.envelopes import parse_body
from handlers.records import ModelState
from handlers.retrainer import Retrainer
from handlers.wiring import assemble, start
from tests.azurite import Azurite
from tests.builders import EXAMPLE_POLICY, MODEL, REPO, WORKSPACE, drift_event
from tests.conftest import table_prefix
from tests.fakes import Clock, RecordingActions
from tests.layout_before import WorkerBefore
from tests.ledgers import LedgerSpec
from tests.world import World

TABLE = pytest.mark.parametrize("ledger_spec", ["table"], indirect=True)

Hook = Any  # a raw_request_hook: called with each request before it is sent
LISTED = dict.fromkeys(EXAMPLE_POLICY.models, "")  # the directory once the policy's models are adopted: no bodies


def hooked(spec: LedgerSpec, hook: Hook) -> TableLedger:
    """A Table ledger on ``spec``'s tables whose client calls ``hook`` before sending each request."""
    return TableLedger(
        TableServiceClient.from_connection_string(spec.target, **client_options(raw_request_hook=hook)), spec.prefix
    )


def started(ledger: TableLedger, actions: RecordingActions, clock: Clock) -> Retrainer:
    """A worker on ``ledger``, assembled and started as runtime.build does."""
    return start(assemble(EXAMPLE_POLICY, ledger, actions, actions, clock, [WORKSPACE]))


def deliver(worker: Retrainer, raw: dict[str, Any]) -> Any:
    [env] = parse_body(json.dumps([raw]))
    return worker.service.handle_envelope(env)


def directory(spec: LedgerSpec) -> dict[str, str]:
    """The ``models`` table: each row's PartitionKey and body."""
    table = TableServiceClient.from_connection_string(spec.target).get_table_client(spec.prefix + "models")
    return {str(row["PartitionKey"]): get_body(row) for row in table.list_entities()}


def worker_before(spec: LedgerSpec) -> WorkerBefore:
    """A worker of the code before on ``spec``'s tables (created if they are not there yet)."""
    spec.open()
    return WorkerBefore(spec.target, spec.prefix)


def take_slot(s: ModelState) -> tuple[ModelState | None, guards.Verdict]:
    """A retrain's slot, as the code before's guards took it (the same guards: its state is this one's)."""
    return guards.reserve(s, guards.RETRAIN, "re-before", Clock()(), timedelta(hours=6), 3)


def posts_to(request: PipelineRequest, table: str) -> bool:  # type: ignore[type-arg]
    http = request.http_request
    return http.method == "POST" and http.url.split("?")[0].endswith("/" + table)


def test_a_model_s_first_event_ever_costs_six_requests_on_a_worker_started_as_in_azure(azurite: Azurite) -> None:
    """The bench's own run (bench/round_trips.py), on new tables: the worker's start lists the model
    (the model had no row: its event is its first ever), and no delivery touches the directory."""
    prefix = table_prefix()
    out = event_figures(azurite.connection_string, prefix)
    creates, listing = ["POST Tables query/insert"] * 4, f"GET {prefix}models query/insert"
    assert out[STARTS[0]] == [*creates, listing, f"POST {prefix}models query/insert"]
    assert out[STARTS[1]] == [*creates, listing]  # listed: nothing inserted
    first = out["drift event (retrain)"]
    assert len(first) == 6 and not any("models" in sent for sent in first), first
    assert len(out[WARM]) == 5 and len(out[COLD]) == 6 and len(out["drift event (refused)"]) == 4


@TABLE
def test_a_worker_of_the_code_before_cannot_take_the_slot_of_a_model_adopted_before_its_first_event(
    ledger_spec: LedgerSpec,
) -> None:
    world = World(ledger_spec)  # started: the policy's model is listed, with no event yet
    before = worker_before(ledger_spec)
    with pytest.raises(ValueError, match="Expecting value"):  # the code before's json.loads of a row without a body
        before.update_model(MODEL, take_slot)
    assert before.update_model("outside-the-policy", take_slot).granted  # no row: that code takes what it finds
    assert directory(ledger_spec)[MODEL] == ""  # the fence is unchanged ...
    [retrain] = world.deliver(drift_event(event_id="e-1")).decisions
    assert (retrain.action, retrain.outcome) == ("retrain", "submitted")  # ... and the one slot is this code's
    assert len(world.actions.submissions) == 1


@TABLE
def test_a_slot_the_code_before_took_before_the_worker_started_is_taken_over_on_the_model_s_first_event(
    ledger_spec: LedgerSpec,
) -> None:
    before = worker_before(ledger_spec)
    assert before.update_model(MODEL, take_slot).granted  # a retrain reserved by the code before
    world = World(ledger_spec)  # started: the model's row holds the state of the layout before
    [refused] = world.deliver(drift_event(event_id="e-1")).decisions
    assert refused.outcome == "skipped" and world.actions.submissions == []  # its slot stands: no second retrain
    assert world.ledger.get_model(MODEL).flights["retrain"].decision == "re-before"
    assert "moved" in json.loads(directory(ledger_spec)[MODEL])  # taken from the code before ...
    with pytest.raises(KeyError, match="model"):
        before.update_model(MODEL, take_slot)  # ... which can no longer act on it


@TABLE
def test_a_row_the_code_before_inserts_between_the_listing_and_the_insert_is_taken_over_as_well(
    ledger_spec: LedgerSpec,
) -> None:
    before = worker_before(ledger_spec)
    raced: list[bool] = []

    def race(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        if not raced and posts_to(request, ledger_spec.prefix + "models"):  # the adoption's insert
            raced.append(before.update_model(MODEL, take_slot).granted)  # an old worker's insert, first

    actions = RecordingActions()
    worker = started(hooked(ledger_spec, race), actions, Clock())
    assert raced == [True]  # the insert found the old worker's row (409): its kind is left to the first write
    [refused] = deliver(worker, drift_event(event_id="e-1")).decisions
    assert refused.outcome == "skipped" and actions.submissions == []  # the old slot stands
    assert "moved" in json.loads(directory(ledger_spec)[MODEL])


@TABLE
def test_workers_starting_at_once_list_each_model_once_and_retrain_it_once(ledger_spec: LedgerSpec) -> None:
    """Each worker lists the directory before any inserts (a barrier in front of the inserts): every
    one of them inserts, one per model wins, the others find its row (409) and read it on first write."""
    n = 4
    barrier = threading.Barrier(n, timeout=30)
    inserts: list[str] = []

    def wait_for_the_others(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        if posts_to(request, ledger_spec.prefix + "models"):
            inserts.append(request.http_request.url)
            barrier.wait()

    ledger_spec.open()  # the tables
    ledgers = [hooked(ledger_spec, wait_for_the_others) for _ in range(n)]
    actions, clock = RecordingActions(), Clock()
    workers: list[Retrainer] = []
    threads = [threading.Thread(target=lambda x=x: workers.append(started(x, actions, clock))) for x in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(workers) == n and len(inserts) == n * len(LISTED)
    assert directory(ledger_spec) == LISTED
    results = [deliver(w, drift_event(event_id=f"e-{k}")).decisions[0].outcome for k, w in enumerate(workers)]
    assert sorted(results) == ["skipped"] * (n - 1) + ["submitted"] and len(actions.submissions) == 1


@TABLE
def test_a_model_adopted_at_start_shows_as_before_and_has_no_state_until_its_first_write(
    ledger_spec: LedgerSpec,
) -> None:
    actions, clock = RecordingActions(), Clock()
    ledger = ledger_spec.open()
    unstarted = assemble(EXAMPLE_POLICY, ledger, actions, actions, clock, [WORKSPACE])
    shown = unstarted.models()  # GET /api/models and the console: what a worker shows without adopting
    worker = start(unstarted)
    assert directory(ledger_spec) == LISTED  # listed ...
    assert worker.models() == shown and worker.ledger.list_models() == [] and worker.ledger.decisions() == []
    assert World(ledger_spec).worker.models() == shown  # ... and shown as before, by any worker
    deliver(worker, drift_event(event_id="e-1"))
    assert [s.model for s in ledger_spec.open().list_models()] == [MODEL]


@TABLE
def test_a_worker_whose_ledger_cannot_be_reached_as_it_starts_starts_and_lists_the_model_on_its_first_write(
    ledger_spec: LedgerSpec, caplog: pytest.LogCaptureFixture
) -> None:
    down = [True]
    sent: list[str] = []

    def unreachable(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        http = request.http_request
        if down[0] and "models" in http.url:
            raise ServiceRequestError("connection refused")
        sent.append(f"{http.method} {http.url.split('?')[0].rsplit('/', 1)[-1]}")

    actions = RecordingActions()
    with caplog.at_level(logging.WARNING, logger="handlers.wiring"):
        worker = started(hooked(ledger_spec, unreachable), actions, Clock())
    assert "did not adopt the policy's models" in caplog.text and "cannot reach the service" in caplog.text
    assert directory(ledger_spec) == {}
    down[0] = False
    sent.clear()
    [retrain] = deliver(worker, drift_event(event_id="e-1")).decisions
    assert retrain.outcome == "submitted" and len(actions.submissions) == 1
    assert f"POST {ledger_spec.prefix}models" in sent  # the model's row, inserted on its first write, as before
    assert directory(ledger_spec) == {MODEL: ""}  # the policy's other model: on its own first write


@TABLE
def test_the_read_only_commands_write_nothing_to_the_directory_and_a_serving_worker_does(
    ledger_spec: LedgerSpec,
) -> None:
    env = {**ledger_spec.settings(), "RETRAIN_JOB_NAME_KEY": "k" * 64}
    settings = Settings.from_env(env)
    ledger_spec.open()  # the tables
    runtime.explainer(settings, None, with_ledger=True)  # retrain explain --with-ledger
    runtime.backtester(settings, REPO / "examples" / "policy.yaml")  # retrain backtest
    runtime.audit(settings)  # retrain decisions, why, notifications
    assert directory(ledger_spec) == {}
    runtime.build(settings)  # a worker that serves
    assert directory(ledger_spec) == LISTED


@TABLE
def test_a_directory_row_no_worker_can_read_does_not_stop_the_workers_starting(ledger_spec: LedgerSpec) -> None:
    """Adopting reads every row of the directory: one whose body is not a state (hand-edited, cut short)
    is another model's problem, as it was before adoption, not every worker's at start."""
    ledger_spec.open()
    table = TableServiceClient.from_connection_string(ledger_spec.target).get_table_client(
        ledger_spec.prefix + "models"
    )
    table.create_entity({"PartitionKey": "hand-edited", "RowKey": "", "body": '{"model": "hand-ed'})

    world = World(ledger_spec)  # started

    [retrain] = world.deliver(drift_event(event_id="e-1")).decisions
    assert (retrain.action, retrain.outcome) == ("retrain", "submitted")
    assert directory(ledger_spec) == {**LISTED, "hand-edited": '{"model": "hand-ed'}  # left as it was
