"""``retrain explain``, ``send`` and ``replay``: the commands about events (an event file, dead letters)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from function_app.runtime import build, deadletters, explainer, make_credential
from function_app.settings import Settings
from handlers.errors import InvalidInput
from handlers.retrainer import parse_body, read_json


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
            said = getattr(d, "details", {}).get("signal")
            if isinstance(said, dict):  # a v2 monitor's breach: its signal's class decided (drift.classes)
                print(f"class   signal {said.get('signal')!r} of monitor {said.get('monitor')!r}: {said.get('class')}")
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
            _worth(preview.record)
            print("render  " + json.dumps(preview.rendered, indent=2).replace("\n", "\n        "))
        print()
    return 0


def _worth(record: Any) -> None:
    """What a retrain's checks found (handlers.worthiness): a veto in its monitor run, the champion's data."""
    if "veto" not in record.details and "worthiness" not in record.details:
        return
    if record.outcome == "skipped" and "guard" not in record.details:
        print(f"worth   would skip: {record.reason}")
        return
    judged = record.details.get("worthiness") or {}
    if judged.get("judged") is False:
        print(f"worth   goes ahead, not judged: {judged.get('why')}")
    elif judged:
        print(
            f"worth   goes ahead: newer data {json.dumps(judged.get('newer'))} than the champion {judged.get('champion')} saw"
        )
    if "veto" in record.details:
        print(f"veto    checked {json.dumps(record.details['veto'])}")


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


def cmd_replay(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    credential = make_credential(settings)
    store = deadletters(settings, credential, args.prefix or "")
    # a dry run lists what it would replay and writes nothing: not the policy's models as a serving worker does
    reports = build(settings, credential=credential, serves=not args.dry_run).replay(store, dry_run=args.dry_run)
    for r in reports:
        print(
            f"{r.outcome:12}  {r.event_type or '-'}  {r.event_id or '-'}  (dead-lettered: {r.dead_letter_reason})\n    {r.blob}: {r.detail}"
        )
    if not reports:
        print(f"no dead-lettered events waiting in container {settings.deadletter_container!r}")
    return 1 if any(r.outcome in ("failed", "transient", "unreadable") for r in reports) else 0


def add_parsers(sub: Any) -> None:
    """``retrain explain``, ``send`` and ``replay``."""
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
    p = sub.add_parser("replay", help="replay dead-lettered events from their blobs (RETRAIN_DEADLETTER_CONTAINER)")
    p.add_argument("--prefix", help="only blobs under this prefix, e.g. the subscription name in upper case")
    p.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
    p.set_defaults(fn=cmd_replay)
