"""The `retrain` command line: each command parses its arguments, calls the application's API
(handlers/retrainer.py, through function_app/runtime.py) and prints what it returns.

retrain explain EVENT.json      the decision trace for an event file, without side effects
retrain send EVENT.json         post it to a running host with the real EventGridPublisherClient
retrain replay                  replay dead-lettered events from their blobs
retrain decisions               the audit trail from the configured ledger
retrain notifications [--dead]  the outbox: notifications not sent yet, or those dead-lettered
retrain why EVENT_ID            why an event did (or didn't) do something
retrain check-policy FILE       validate a policy file (as start-up does)
retrain backtest --policy DRAFT.yaml [--since 30d] [--json]
                                what a draft policy would have done with the recorded events, beside what was done
retrain reconcile               one pass of the reconciler (the local host has no timers)
retrain rollback|promote|pause|resume MODEL [--reason ...]
                                steer MODEL's rollout, on the configured ledger and backend
retrain freeze|unfreeze --reason ... [--model M ...] [--action A ...]
                                the stop switch: no new work, rollouts hold their step (all models by default)
retrain approve|reject DECISION --reason ...
                                a deploy waiting for approval carried out (once) or released
retrain host                    run the local development host

The commands live by group: :mod:`function_app.cli.events` (event files, dead letters),
:mod:`function_app.cli.trail` (reading the ledger and policies), :mod:`function_app.cli.backtest` (a draft
policy replayed), :mod:`function_app.cli.steer` (acting: the reconciler, operators, the stop switch,
approvals, the host).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from function_app.cli import backtest, events, steer, trail
from handlers.errors import PolicyError, RetrainError


def parser() -> argparse.ArgumentParser:
    """The command line's parser: every command of every group."""
    top = argparse.ArgumentParser(prog="retrain", description="The retrain service's command line.")
    sub = top.add_subparsers(dest="command", required=True)
    events.add_parsers(sub)
    trail.add_parsers(sub)
    backtest.add_parsers(sub)
    steer.add_parsers(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    return _run(parser().parse_args(argv))


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
