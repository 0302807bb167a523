"""The `retrain` command line.

retrain explain EVENT.json      the decision trace for an event file, without side effects
retrain send EVENT.json         post it to a running host with the real EventGridPublisherClient
retrain decisions               the audit trail from the configured ledger
retrain notifications [--dead]  the outbox: notifications not sent yet, or those dead-lettered
retrain check-policy FILE       validate a policy file (as start-up does)
retrain replay                  replay dead-lettered events from their blobs
retrain reconcile               one pass of the reconciler (the local host has no timers)
retrain rollback|promote|pause|resume MODEL [--reason ...]
                                steer MODEL's rollout, on the configured ledger and backend
retrain freeze|unfreeze --reason ... [--model M ...] [--action A ...]
                                the stop switch: no new work, rollouts hold their step (all models by default)
retrain approve|reject DECISION --reason ...
                                a deploy waiting for approval carried out (once) or released
retrain host                    run the local development host
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sqlite3
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from function_app.runtime import audit, build, deadletters, explainer, get_retrainer, make_credential, new_id
from function_app.settings import Settings
from handlers.errors import InvalidInput, PolicyError, RetrainError
from handlers.retrainer import OPERATOR, OUTCOMES, OperatorRequest, Trigger, check_policy, parse_body, read_json


def _read_events(path: str) -> Any:
    """The events in file ``path``: one event object or a non-empty array of them, read as the webhook
    reads a body (bounded size and depth); anything else is one line saying what is wrong (exit 2)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    try:
        events = read_json(raw, "an event object or a JSON array of events")
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    if not (
        isinstance(events, dict) or (isinstance(events, list) and events and all(isinstance(e, dict) for e in events))
    ):
        raise InvalidInput(f"{path}: give an event object or a non-empty JSON array of event objects")
    return events


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= 1000):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a whole number from 1 to 1000")
    return int(text)


def _signal_fields(signal: Any) -> dict[str, Any]:
    skip = {"trigger", "event_data", "run_properties"}
    return {f.name: getattr(signal, f.name) for f in dataclasses.fields(signal) if f.name not in skip}


def cmd_explain(args: argparse.Namespace) -> int:
    """Each decision as the executor would carry it out, previewed (Retrainer.explain): nothing recorded."""
    retrainer = explainer(Settings.from_env(), Path(args.policy) if args.policy else None, args.with_ledger)
    for item in retrainer.explain(parse_body(json.dumps(_read_events(args.event))), check=args.with_ledger):
        env, signal = item.envelope, item.signal
        print(f"event   {env.event_id}  {env.event_type}  ({env.schema} schema)")
        print(f"source  {env.source}")
        print(f"signal  {type(signal).__name__} {json.dumps(_signal_fields(signal), default=str)}")
        if getattr(signal, "claims_service", False):
            print("runner  " + _runner(bool(getattr(signal, "ours", False)), item.checked))
        for d, preview in item.decisions:
            print(f"decide  {d.action} model={d.model} id={d.id}")
            print(f"        why: {d.reason}")
            if preview is None:
                continue
            if preview.verdict is None:
                print("guard   not checked (pass --with-ledger to check cooldown, single-flight and budget)")
            else:
                print(f"guard   {'would act' if preview.verdict.granted else 'would skip'}: {preview.verdict.reason}")
            if preview.error is not None:
                raise preview.error
            judged = preview.judged
            if judged is not None:
                print(f"gate    {judged.next} ({retrainer.backend} backend): {judged.why}")
                if judged.gate is not None:
                    print(f"        {json.dumps({k: v for k, v in judged.gate.as_dict().items() if k != 'why'})}")
            print("render  " + json.dumps(preview.rendered, indent=2).replace("\n", "\n        "))
        print()
    return 0


def _runner(ours: bool, checked: bool) -> str:
    if not checked:
        return "claims to be this service's run; not checked (pass --with-ledger to check it in the ledger)"
    if ours:
        return "this service's own run (the ledger holds its decision)"
    return "claims to be this service's run; the ledger does not confirm it"


def cmd_send(args: argparse.Namespace) -> int:
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from azure.eventgrid import EventGridPublisherClient

    events = _read_events(args.event)
    events = events if isinstance(events, list) else [events]
    if args.new_id:
        events = [{**e, "id": str(uuid.uuid4())} for e in events]
    if args.function:
        endpoint = f"{args.url.rstrip('/')}/runtime/webhooks/eventgrid?functionName={args.function}"
    else:
        endpoint = f"{args.url.rstrip('/')}/api/events"
    # A Functions host reads its function key from x-functions-key (the local host ignores keys); the
    # client's own credential header (aeg-sas-key) is for Event Grid topics and carries nothing here.
    client = EventGridPublisherClient(endpoint, AzureKeyCredential("unused"))
    headers = {"x-functions-key": args.key} if args.key else {}
    cloud = bool(events) and isinstance(events[0], dict) and "specversion" in events[0]
    try:
        client.send(
            events,
            content_type="application/cloudevents-batch+json; charset=utf-8" if cloud else None,
            headers=headers,
        )
    except (HttpResponseError, ServiceRequestError) as exc:
        print(f"send failed: {exc}", file=sys.stderr)
        return 1
    print(f"sent {len(events)} event(s) to {endpoint}: " + ", ".join(str(e.get("id")) for e in events))
    return 0


def cmd_decisions(args: argparse.Namespace) -> int:
    records = audit(Settings.from_env()).decisions(args.model, args.limit, event_id=args.event_id, outcome=args.outcome)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    for r in records:
        job = (r.job or {}).get("name") or "-"
        print(f"{r.at}  {r.model or '-':24}  {r.action:8}  {r.outcome:9}  {job}\n    {r.reason}")
        caller = r.trigger.get("caller")
        if isinstance(caller, dict):
            who = caller.get("name") or caller.get("id") or caller.get("kind")
            print(
                f"    asked by: {who}" + (f" ({caller.get('id')})" if caller.get("name") and caller.get("id") else "")
            )
    if not records:
        print("no decisions recorded yet")
    return 0


def cmd_notifications(args: argparse.Namespace) -> int:
    """The outbox: the notifications not sent yet (their failed attempts, next try, last error), or
    with --dead those given up on, with why."""
    entries = audit(Settings.from_env()).notifications(dead=args.dead, limit=args.limit)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    for e in entries:
        n = e.notification
        when = f"dead-lettered {e.sent}" if e.dead else (f"next try {e.due}" if e.due else "due")
        print(f"{n.time}  {n.id}  {n.type}  {n.subject or '-'}\n    {e.attempts} failed attempt(s), {when}")
        if e.error:
            print(f"    {'why' if e.dead else 'last error'}: {e.error}")
    if not entries:
        print("no dead-lettered notifications" if args.dead else "no notifications waiting to be sent")
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    """Why did (or didn't) event EVENT_ID do something: its decisions, the guards they met, what followed."""
    answers = audit(Settings.from_env()).why(args.event_id)
    if args.json:
        print(json.dumps([a.to_dict() for a in answers], indent=2))
        return 0 if answers else 1
    if not answers:
        print(
            f"no decision is recorded for event {args.event_id}: it never reached the service (check the event "
            "subscription's filters and dead letters: retrain replay --dry-run), or it was purged after "
            "RETRAIN_RETENTION_DAYS"
        )
        return 1
    for answer in answers:
        d = answer.decision
        print(
            f"event    {d.trigger.get('event_id')}  {d.trigger.get('event_type')}  (source {d.trigger.get('source')})"
        )
        print(f"decided  {d.at}  {d.action} {d.outcome}  model={d.model or '-'}  id={d.id}")
        print(f"why      {d.reason}")
        if answer.guard is not None:
            until = f" until {answer.guard['until']}" if answer.guard.get("until") else ""
            print(f"guard    {answer.guard['guard']}{until}")
        if d.job:
            print(f"job      {d.job.get('name')}" + (f"  {d.job['url']}" if d.job.get("url") else ""))
        for later in answer.led_to:
            print(f"then     {later.at}  {later.action} {later.outcome}: {later.reason}")
        print()
    return 0


def cmd_check_policy(args: argparse.Namespace) -> int:
    print(f"{args.file}: valid; models: {', '.join(check_policy(args.file))}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    credential = make_credential(settings)
    store = deadletters(settings, credential, args.prefix or "")
    reports = build(settings, credential=credential).replay(store, dry_run=args.dry_run)
    for r in reports:
        print(
            f"{r.outcome:12}  {r.event_type or '-'}  {r.event_id or '-'}  (dead-lettered: {r.dead_letter_reason})\n    {r.blob}: {r.detail}"
        )
    if not reports:
        print(f"no dead-lettered events waiting in container {settings.deadletter_container!r}")
    return 1 if any(r.outcome in ("failed", "transient", "unreadable") for r in reports) else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    report = build(Settings.from_env()).reconcile()
    print(json.dumps(report.to_dict(), indent=2))
    return 1 if report.deferred else 0


def cmd_operate(args: argparse.Namespace) -> int:
    """An operator's action on the configured ledger and backend, as ``retrain reconcile`` works:
    the same decision as the HTTP route's, recorded with the command line's user as the caller."""
    request = OperatorRequest(
        _trigger(args.command),
        args.model,
        args.command,
        (args.reason or "no reason given").strip()[:500],
    )
    record = get_retrainer().operate(request)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        print(f"{record.action} {record.outcome}: {record.reason}")
    return 1 if record.outcome == "failed" else 0


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without USER): say so
        return "unknown"


def cmd_freeze(args: argparse.Namespace) -> int:
    """The stop switch set or lifted on the configured ledger, recorded with the command line's user."""
    on = args.command == "freeze"
    trigger = _trigger(args.command)
    records = get_retrainer().freeze(on, trigger, args.reason.strip()[:500], models=args.model, actions=args.action)
    for record in records:
        print(
            json.dumps(record.to_dict())
            if args.json
            else f"{record.model}: {record.action} {record.outcome}: {record.reason}"
        )
    return 0


def _trigger(command: str) -> Trigger:
    """An operator's request from the command line, recorded with its user as the caller."""
    caller = (("kind", "command line"), ("user", _user()))
    return Trigger("cli", new_id(), f"ManualRequest.{command}", caller=caller, channel=OPERATOR)


def cmd_approve(args: argparse.Namespace) -> int:
    """A pending deploy approved or rejected on the configured ledger, recorded with the command line's user."""
    trigger = _trigger(args.command)
    record = get_retrainer().approve(
        args.decision, trigger, args.reason.strip()[:500], approve=args.command == "approve"
    )
    print(
        json.dumps(record.to_dict())
        if args.json
        else f"{record.model}: {record.action} {record.outcome}: {record.reason}"
    )
    return 1 if record.outcome == "failed" else 0


def cmd_host(args: argparse.Namespace) -> int:
    from function_app.localhost import main as host_main

    return host_main(["--port", str(args.port)] if args.port else [])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrain", description="The retrain service's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("explain", help="print the decision trace for an event file, without side effects")
    p.add_argument("event")
    p.add_argument("--policy", help="policy file (default: RETRAIN_POLICY_PATH)")
    p.add_argument(
        "--with-ledger", action="store_true", help="also check guards against the configured ledger (read only)"
    )
    p.set_defaults(fn=cmd_explain)
    p = sub.add_parser("send", help="post an event file to a running host with EventGridPublisherClient")
    p.add_argument("event")
    p.add_argument("--url", default="http://127.0.0.1:7071")
    p.add_argument("--function", help="deliver to /runtime/webhooks/eventgrid?functionName=NAME instead of /api/events")
    p.add_argument("--new-id", action="store_true", help="give each event a fresh id (a new event, not a redelivery)")
    p.add_argument("--key", help="function key of a deployed app (sent as x-functions-key)")
    p.set_defaults(fn=cmd_send)
    p = sub.add_parser("decisions", help="list the audit trail, newest first")
    p.add_argument("--model")
    p.add_argument("--limit", type=_limit, default=20, help="how many, newest first: 1 to 1000 (default 20)")
    p.add_argument("--event-id", help="only the decisions that answered events of this id")
    p.add_argument("--outcome", choices=OUTCOMES)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_decisions)
    p = sub.add_parser("notifications", help="the outbox: notifications not sent yet, or (--dead) dead-lettered")
    p.add_argument("--dead", action="store_true", help="those given up on (refused too often, or too old), with why")
    p.add_argument("--limit", type=_limit, default=20, help="how many, newest first: 1 to 1000 (default 20)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_notifications)
    p = sub.add_parser("why", help="why did (or didn't) an event do something: its decisions, guards and what followed")
    p.add_argument("event_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_why)
    p = sub.add_parser("check-policy", help="validate a policy file")
    p.add_argument("file")
    p.set_defaults(fn=cmd_check_policy)
    p = sub.add_parser("replay", help="replay dead-lettered events from their blobs (RETRAIN_DEADLETTER_CONTAINER)")
    p.add_argument("--prefix", help="only blobs under this prefix, e.g. the subscription name in upper case")
    p.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser(
        "reconcile", help="run one pass of the reconciler and print its report as JSON (exit 1 if work was deferred)"
    )
    p.set_defaults(fn=cmd_reconcile)
    for action, what in (
        ("rollback", "roll MODEL's rollout back (none in flight: back to the deployment the last promotion replaced)"),
        ("promote", "promote MODEL's rollout in flight now: the candidate gets 100%%"),
        ("pause", "pause MODEL's rollout in flight: the reconciler leaves it as it is"),
        ("resume", "resume MODEL's paused rollout: its step goes on, the bake restarted"),
    ):
        p = sub.add_parser(action, help=what)
        p.add_argument("model")
        p.add_argument("--reason", help="why, for the audit trail")
        p.add_argument("--json", action="store_true", help="print the decision record as JSON")
        p.set_defaults(fn=cmd_operate)
    _switch_parsers(sub)
    p = sub.add_parser("host", help="run the local development host")
    p.add_argument("--port", type=int)
    p.set_defaults(fn=cmd_host)
    return _run(parser.parse_args(argv))


def _switch_parsers(sub: Any) -> None:
    """``retrain freeze`` and ``retrain unfreeze``: the stop switch."""
    for verb, what in (
        ("freeze", "the stop switch: no new retrains or deployments, rollouts hold their step (rollbacks go on)"),
        ("unfreeze", "lift the stop switch"),
    ):
        p = sub.add_parser(verb, help=what)
        p.add_argument("--reason", required=True, help="why, for the audit trail")
        p.add_argument("--model", action="append", help="only this model (repeat for more; default: every model)")
        if verb == "freeze":
            p.add_argument(
                "--action", action="append", choices=["retrain", "deploy", "promote"], help="only this action"
            )
        else:
            p.set_defaults(action=None)
        p.add_argument("--json", action="store_true", help="print the decision records as JSON lines")
        p.set_defaults(fn=cmd_freeze)
    for verb, what in (
        ("approve", "carry out a deploy waiting for approval"),
        ("reject", "release it, nothing deployed"),
    ):
        p = sub.add_parser(verb, help=what)
        p.add_argument("decision", help="the pending decision's id (retrain decisions --outcome pending)")
        p.add_argument("--reason", required=True, help="why, for the audit trail")
        p.add_argument("--json", action="store_true", help="print the decision record as JSON")
        p.set_defaults(fn=cmd_approve)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; a handled error is one line on stderr and exit 2, never a traceback."""
    try:
        return int(args.fn(args))
    except PolicyError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except (RetrainError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # a ledger file that cannot be opened or read: say which, no traceback
        print(f"the SQLite ledger (RETRAIN_SQLITE_PATH) cannot be used: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
