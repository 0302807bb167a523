"""Table storage requests per drift event, per deploying run and per idle reconciler pass
(docs/benchmarks.md, "Table requests per flow"; issue 22, "Fewer round trips").

The service and the reconciler are assembled and started as a worker assembles and starts them
(:func:`handlers.wiring.assemble`, :func:`handlers.wiring.start`: the ledger adopts the policy's models) on the Table ledger, against Azurite (started here on free ports of 127.0.0.1 and stopped at the end),
with the tests' in-memory workspace (``tests.fakes.RecordingActions``) as the Azure ML backend: it names each data
asset's latest version, so a retrain's training data, read through ``@latest`` as a real policy reads it (the
example policy's), is pinned to a version before it is submitted (:mod:`handlers.pins`), as on Azure ML. Every
HTTP request the ledger's Table client sends is counted by the transport it is given: a wrapper
around the ledger's own transport that counts and passes each request on, so what is counted is what
goes over the wire (an entity group transaction is one request; an SDK retry is another).

- a worker's start: the tables created, and the policy's models adopted (the directory listed, a row
  inserted for each model that has none: on a new ledger, then on one that lists them);
- a drift event that starts a retrain (the model's first event ever, on a worker started on a new
  ledger), and one the guards refuse (the same model, in its cooldown);
- a deploying run: the retrain's run completes, it is judged and its candidate starts rolling out;
- a drift event that starts a retrain on a worker that knows the model's row (it wrote it last): the
  first case without the model's read, as on a worker that handled that model's last event;
- an idle reconciler pass (nothing in flight, nothing pending in the outbox, the purge not due) with
  1, 5 and 20 models in the policy, each with a ``deploy`` section and a past (a retrain whose run
  failed, 40 drift events refused), without and with a past promotion (it demoted a deployment
  that was retired since).

A notification topic is configured (a post that always succeeds), so the outbox is drained as it is
in Azure with ``RETRAIN_NOTIFY_TOPIC`` set.

    .venv/bin/python bench/round_trips.py            # the table
    .venv/bin/python bench/round_trips.py --detail   # and each request in order: method, table, kind
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azure.core.pipeline.transport import HttpTransport  # noqa: E402 (after the path: run as a script)

LATEST = "azureml:diabetes-training@latest"  # the bench's training data, pinned as each retrain is carried out
# The goals of issue 22: a drift event at most 6; an idle pass at most one per model plus a constant.
WARM = "drift event (retrain), row known"
COLD = "drift event (retrain), row not known"
STARTS = (
    "worker start, 1 model(s), new ledger",
    "worker start, 1 model(s), listed",
    "worker start, 20 model(s), new ledger",
)
GOALS = {"drift event (retrain)": 6, WARM: 6, COLD: 6, "drift event (refused)": 6}
DELIVERIES = ("drift event (retrain)", "drift event (refused)", "deploying run", WARM, COLD)
# What this bench counts on the code of 68d68a3 (main before the partition per model: a model's state in
# the models table, every record in one of eight shards, the outbox in one partition), printed beside the
# figures now; run on 2026-12-07 with this file. On 66bf464, when issue 22 began: 13, 5, 17, and 2 + 8 per
# model for an idle pass (docs/benchmarks.md).
BEFORE = {
    **dict.fromkeys(STARTS, 4),  # the four tables created (measured on 68d68a3 too, whatever the models)
    "drift event (retrain)": 10,
    "drift event (refused)": 4,
    "deploying run": 12,
    WARM: 9,
    COLD: 10,
    **{f"idle pass, {n:2d} model(s), {past}": 2 for n in (1, 5, 20) for past in ("never promoted", "promoted before")},
}


NOTIFYING = "notifying: "  # a request of the outbox attempt that ends a delivery


class CountingTransport(HttpTransport[Any, Any]):
    """The ledger's transport, counting each request it sends (and what it was, for ``--detail``)."""

    def __init__(self, inner: HttpTransport[Any, Any]) -> None:
        self.inner = inner
        self.sent: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        path = request.url.split("?")[0].rsplit("/", 1)[-1]
        table = path.split("(")[0]
        kind = "transaction" if path == "$batch" else ("point" if "PartitionKey=" in path else "query/insert")
        self.sent.append(f"{request.method} {table} {kind}")
        return self.inner.send(request, **kwargs)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> CountingTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.inner.__exit__(*args)

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


def policy_text(models: int) -> str:
    """The example policy's first model, ``models`` times under other names (each its own endpoint), its training
    data read through ``@latest`` (:data:`LATEST`)."""
    import yaml

    example = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    first = example["models"]["sklearn_regression_model"]
    out = {"version": 1, "defaults": example["defaults"], "models": {}}
    for n in range(models):
        one = json.loads(json.dumps(first))
        one["drift"]["monitors"] = [f"monitor-{n}"]
        one["drift"].pop("signals", None)
        one.pop("alerts", None)
        one["deploy"]["endpoint"] = f"endpoint-{n}"
        one["retrain"]["inputs"]["training_data"] = {"type": "mltable", "value": LATEST}
        out["models"][f"model-{n}"] = one
    return yaml.safe_dump(out)


class Bench:
    def __init__(self, connection: str, prefix: str, models: int) -> None:
        from azure.data.tables import TableServiceClient

        from function_app.adapters.table_entities import client_options
        from handlers.policy_file import parse_policy
        from tests.fakes import Clock, RecordingActions

        options = client_options()
        self.transport = CountingTransport(options["transport"])
        self.service = TableServiceClient.from_connection_string(connection, **{**options, "transport": self.transport})
        self.prefix = prefix
        self.clock = Clock()
        self.actions = RecordingActions()
        self.policy = parse_policy(policy_text(models))
        self.posted: list[Any] = []
        self.started = self.new_worker()

    def new_worker(self) -> list[str]:
        """A worker that starts now (its ledger knows no row yet), on the same tables, clock and
        workspace, as a worker that serves starts (runtime.build): the requests of its start (the
        tables created, the policy's models adopted), which are no delivery's."""
        from function_app.adapters.table_ledger import TableLedger
        from handlers.wiring import assemble, start
        from tests.builders import WORKSPACE

        self.transport.take()
        self.ledger = TableLedger(self.service, self.prefix)
        self.worker = start(
            assemble(self.policy, self.ledger, self.actions, self.actions, self.clock, [WORKSPACE], notifier=self)
        )
        return self.transport.take()

    def publish(self, notifications: Any) -> None:
        """The notification topic (RETRAIN_NOTIFY_TOPIC set): takes every post."""
        self.posted.extend(notifications)

    def deliver(self, raw: dict[str, Any]) -> tuple[Any, list[str]]:
        """One delivery as a worker makes it: the service handles the event, then, as the delivery
        ends (:func:`function_app.delivery.one_delivery`), one attempt at the outbox; the requests
        of that attempt are marked :data:`NOTIFYING`."""
        from handlers.envelopes import parse_body

        self.transport.take()
        [env] = parse_body(json.dumps([raw]))
        result = self.worker.service.handle_envelope(env)
        handled = self.transport.take()
        self.worker.notify()
        return result, handled + [NOTIFYING + sent for sent in self.transport.take()]

    def reconcile(self, now: datetime | None = None) -> tuple[Any, list[str]]:
        self.transport.take()
        report = self.worker.reconcile(now)
        return report, self.transport.take()


def pinned(retrain: Any) -> None:
    """A submitted retrain went through the pinning (its training data recorded as the version read latest)."""
    assert (retrain.action, retrain.outcome) == ("retrain", "submitted"), retrain
    data = retrain.details["rendered"]["inputs"]["training_data"]
    assert data.get("pinned_from") == LATEST, data
    assert data["value"] != LATEST, data


def event_figures(connection: str, prefix: str = "rtevents") -> dict[str, list[str]]:
    """The deliveries' requests, and the starts of the two workers that make them, on the tables of
    ``prefix`` (new ones: the model's first event is its first ever; tests/test_table_adoption.py
    runs this too, and holds it to the goals)."""
    from tests.builders import drift_event, ours, run_event

    bench = Bench(connection, prefix, 1)
    out: dict[str, list[str]] = {STARTS[0]: bench.started}
    result, out["drift event (retrain)"] = bench.deliver(drift_event(monitor="monitor-0", event_id="drift-1"))
    [retrain] = result.decisions
    pinned(retrain)
    bench.clock.advance(minutes=5)
    result, out["drift event (refused)"] = bench.deliver(drift_event(monitor="monitor-0", event_id="drift-2"))
    assert result.decisions[0].outcome == "skipped", result.decisions
    bench.clock.advance(minutes=30)
    job = retrain.job["name"]
    run = run_event(run_id=job, experiment="diabetes-retrain", tags=ours(model="model-0", decision=retrain.id))
    result, out["deploying run"] = bench.deliver(run)
    [deploy] = result.decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy
    bench.clock.advance(hours=7)  # past the cooldown; the run freed the retrain slot
    result, out[WARM] = bench.deliver(drift_event(monitor="monitor-0", event_id="drift-3"))
    [again] = result.decisions
    pinned(again)
    bench.clock.advance(hours=7)  # past the cooldown again; the slot freed as its run failed
    job = again.job["name"]
    failed = run_event(run_id=job, tags=ours(model="model-0", decision=again.id), status="Failed", event_id="run-4")
    bench.deliver(failed)
    started = bench.new_worker()  # a worker that has not seen the model (another instance, or one just started)
    result, out[COLD] = bench.deliver(drift_event(monitor="monitor-0", event_id="drift-4"))
    [cold] = result.decisions
    pinned(cold)
    return {**out, STARTS[1]: started}


def seed_history(bench: Bench, models: int) -> None:
    """Each model's past, through the service (not counted): a drift event retrained it, its run
    failed (the hold released, the cooldown kept), and 40 drift events were refused by the guards."""
    from tests.builders import drift_event, ours, run_event

    for n in range(models):
        result, _ = bench.deliver(drift_event(monitor=f"monitor-{n}", event_id=f"seed-{n}"))
        [retrain] = result.decisions
        tags = ours(model=f"model-{n}", decision=retrain.id)
        bench.deliver(run_event(run_id=retrain.job["name"], tags=tags, status="Failed", event_id=f"seed-run-{n}"))
        for k in range(40):
            bench.deliver(drift_event(monitor=f"monitor-{n}", event_id=f"seed-{n}-{k}"))


def seed_promotions(bench: Bench, models: int) -> None:
    """Each model's promotion that demoted ``blue`` 3 days ago, and the retirement of ``blue`` a day
    later, written straight into the ledger (not counted)."""
    from handlers.records import DecisionRecord, iso
    from handlers.rollout import retire

    then = bench.clock() - timedelta(days=3)
    for n in range(models):
        model, endpoint = f"model-{n}", f"endpoint-{n}"
        promote = DecisionRecord(
            id=f"pr-seed-{n}",
            model=model,
            action="promote",
            outcome="submitted",
            reason="seeded promotion",
            trigger={"source": "reconciler", "event_id": f"seed-{n}", "event_type": "Tick"},
            at=iso(then),
            job={"name": f"{endpoint}/green", "url": None},
            details={"endpoint": endpoint, "demoted": ["blue"], "traffic": {"green": 100}},
        )
        bench.ledger.put_decision(promote)
        demotion = retire.Demotion("blue", then, promote.id)
        why = "demoted long ago"
        done = retire.Retirement(endpoint, "blue", demotion, why)
        bench.ledger.put_decision(retire.record_of(model, done, then + timedelta(days=1, minutes=1), "submitted"))
        bench.actions.traffic[endpoint] = {"green": 100}


def pass_figures(connection: str, models: int, promoted: bool) -> tuple[list[str], list[str]]:
    """The idle pass's requests, and those of the start of the worker that makes it (a new ledger)."""
    bench = Bench(connection, f"rtpass{models}{'p' if promoted else 'n'}", models)
    seed_history(bench, models)
    if promoted:
        seed_promotions(bench, models)
    bench.reconcile()  # the worker's first pass purges; an idle pass does not
    bench.clock.advance(minutes=5)
    report, sent = bench.reconcile()
    if report.found or report.resumed or report.rollouts or report.retired or report.purged:
        raise SystemExit(f"the pass was not idle: {report.to_dict()}")
    return sent, bench.started


def results() -> dict[str, list[str]]:
    """Each flow's requests (``method table kind``), on an Azurite of its own."""
    from tests.azurite import Azurite

    azurite = Azurite().start()
    try:
        out = event_figures(azurite.connection_string)
        for promoted in (False, True):
            for models in (1, 5, 20):
                name = f"idle pass, {models:2d} model(s), " + ("promoted before" if promoted else "never promoted")
                out[name], started = pass_figures(azurite.connection_string, models, promoted)
                if models == 20 and not promoted:
                    out[STARTS[2]] = started
    finally:
        azurite.close()
    return {**{k: v for k, v in out.items() if k not in STARTS}, **{k: out[k] for k in STARTS}}


def goal(name: str) -> str:
    if name in GOALS:
        return f"goal <= {GOALS[name]}"
    if name.startswith("idle pass"):
        models = int(name.split(",")[1].split(maxsplit=1)[0])
        return f"goal: {models} + a constant"
    if name in STARTS:
        return "once per worker: no delivery's"
    return ""


def print_results(out: dict[str, list[str]], detail: bool = False) -> None:
    print("Table requests (each HTTP request the ledger's client sent to Azurite); a delivery's are those of")
    print("handling it and of the attempt at the outbox that ends it (notifying), as a worker makes them:")
    print(f"  {'':40} {'now':>4}  {'(handling + notifying)':22} {'before':>6}")
    for name, sent in out.items():
        before = BEFORE.get(name)
        notifying = sum(1 for s in sent if s.startswith(NOTIFYING))
        split = f"({len(sent) - notifying} + {notifying})" if name in DELIVERIES else ""
        print(f"  {name:40} {len(sent):4d}  {split:22} {'' if before is None else before:>6}   {goal(name)}")
        if detail:  # in the order sent
            for n, what in enumerate(sent, start=1):
                print(f"      {n:3d}. {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detail", action="store_true", help="each request in the order sent: method, table, kind")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = results()
    if args.json:
        print(json.dumps({name: len(sent) for name, sent in out.items()}, indent=2))
    else:
        print_results(out, args.detail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
