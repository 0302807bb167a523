"""``retrain reconcile``, ``rollback|promote|pause|resume``, ``freeze|unfreeze``, ``approve|reject`` and
``host``: the commands that act, on the configured ledger and backend, as the command line's user."""

from __future__ import annotations

import argparse
import json
from typing import Any

from function_app.runtime import build, get_retrainer, new_id
from function_app.settings import Settings
from handlers.retrainer import OPERATOR, OperatorRequest, Trigger, one_line


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
        one_line(args.reason, "--reason"),
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
    on, reason = args.command == "freeze", one_line(args.reason, "--reason", 'say why, e.g. --reason "incident 4711"')
    trigger = _trigger(args.command)
    records = get_retrainer().freeze(on, trigger, reason, models=args.model, actions=args.action)
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
    reason = one_line(args.reason, "--reason", f'say why you {args.command} it, e.g. --reason "metrics look right"')
    record = get_retrainer().approve(args.decision, _trigger(args.command), reason, approve=args.command == "approve")
    print(
        json.dumps(record.to_dict())
        if args.json
        else f"{record.model}: {record.action} {record.outcome}: {record.reason}"
    )
    return 1 if record.outcome == "failed" else 0


def cmd_host(args: argparse.Namespace) -> int:
    from function_app.localhost import main as host_main

    return host_main(["--port", str(args.port)] if args.port else [])


def add_parsers(sub: Any) -> None:
    """``retrain reconcile``, the operators' commands, the stop switch, approvals and ``host``."""
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
        ("approve", "carry out a retrain or deploy waiting for approval"),
        ("reject", "release it, nothing deployed"),
    ):
        p = sub.add_parser(verb, help=what)
        p.add_argument("decision", help="the pending decision's id (retrain decisions --outcome pending)")
        p.add_argument("--reason", required=True, help="why, for the audit trail")
        p.add_argument("--json", action="store_true", help="print the decision record as JSON")
        p.set_defaults(fn=cmd_approve)
    p = sub.add_parser("host", help="run the local development host")
    p.add_argument("--port", type=int)
    p.set_defaults(fn=cmd_host)
