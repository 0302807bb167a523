"""``retrain decisions``, ``notifications``, ``why`` and ``check-policy``: reading what the ledger and a policy say."""

from __future__ import annotations

import argparse
import json
from typing import Any

from function_app.runtime import audit
from function_app.settings import Settings
from handlers.retrainer import OUTCOMES, check_policy


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= 1000):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a whole number from 1 to 1000")
    return int(text)


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


def add_parsers(sub: Any) -> None:
    """``retrain decisions``, ``notifications``, ``why`` and ``check-policy``."""
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
