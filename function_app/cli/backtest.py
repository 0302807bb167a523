"""``retrain backtest --policy DRAFT.yaml [--since 30d] [--json]``: what a draft policy would have done
with the events the ledger kept, beside what was recorded (Retrainer.backtest)."""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from function_app.runtime import backtester
from function_app.settings import Settings
from handlers.errors import InvalidInput

_SINCE = re.compile(r"^(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?$")
MAX_WINDOW = timedelta(days=3660)


def since(text: str) -> timedelta:
    """``--since``: how far back, as ``30d``, ``12h``, ``90m`` or ``1d12h``."""
    match = _SINCE.match(text.strip())
    window = None
    if match and any(match.groups()):
        d, h, m = (int(g or 0) for g in match.groups())
        window = timedelta(days=d, hours=h, minutes=m)
    if window is None or not timedelta(0) < window <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not how far back to replay; write a duration such as 30d, 12h, 90m or 1d12h "
            "(more than 0, at most 3660d)"
        )
    return window


def human(delta: timedelta) -> str:
    """``1h30m``, ``45m``, ``2d3h``, ``40s``: a duration as a person reads it (whole minutes from 1m up)."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes = round(seconds / 60)
    d, rest = divmod(minutes, 1440)
    h, m = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((d, "d"), (h, "h"), (m, "m")) if n) or "0m"


def _side(counts: dict[str, int]) -> str:
    """One side's counts: ``retrain 2 started, 3 refused (cooldown 3); deploy none; skipped 1``."""
    parts = []
    for action in ("retrain", "deploy"):
        bits = []
        for result in ("started", "refused", "skipped", "failed"):
            n = counts.get(f"{action} {result}", 0)
            if n and result == "refused":
                by = [f"{k.rsplit(' ', 1)[1]} {v}" for k, v in counts.items() if k.startswith(f"{action} refused ")]
                bits.append(f"{n} refused ({', '.join(by)})")
            elif n:
                bits.append(f"{n} {result}")
        parts.append(f"{action} {', '.join(bits) or 'none'}")
    parts.append(f"skipped {counts.get('skipped', 0)}")
    if counts.get("none failed"):
        parts.append(f"failed {counts['none failed']}")
    return "; ".join(parts)


def _compute(c: dict[str, Any]) -> str:
    if c["seconds"] is None:
        return f"{c['runs']} run(s), unknown (no recorded run of {', '.join(c['unknown_pipelines'])})"
    return f"{c['runs']} run(s), {human(timedelta(seconds=c['seconds']))}"


def _labels(outcomes: list[dict[str, Any]]) -> str:
    labels = []
    for o in outcomes:
        head = "skipped" if o["action"] == "none" and o["result"] == "skipped" else f"{o['action']} {o['result']}"
        labels.append(f"{head} ({o['guard']})" if o["guard"] else head)
    return ", ".join(sorted(labels)) or "nothing"


def lines(report: dict[str, Any]) -> list[str]:
    """The report (:meth:`handlers.backtest_report.Report.to_dict`) as the command prints it."""
    out = [
        f"backtest of {report['policy']} over {report['since']} .. {report['until']}: {report['replayed']} event(s) "
        f"replayed, {len(report['unreplayable'])} not replayable, {report['operator_requests']} operator request(s), "
        f"{report['reconciler_starts']} reconciler start(s)"
    ]
    if report["unreplayable"]:
        out.append(
            "  not replayable (no signal kept: recorded before this version, or too large): "
            + ", ".join(report["unreplayable"][:10])
            + (" ..." if len(report["unreplayable"]) > 10 else "")
        )
    if report["truncated"]:
        out.append("  only the oldest events were replayed: give a shorter --since")
    durations = ", ".join(f"{k} {human(timedelta(seconds=v))}" for k, v in report["durations"].items())
    out.append(f"pipeline durations (mean of recorded runs): {durations or 'none recorded'}")
    for m in report["models"]:
        out.append(f"model {m['model']}")
        out.append(f"  recorded  {_side(m['recorded'])}")
        out.append(f"  draft     {_side(m['draft'])}")
        rc, dc = m["compute"]["recorded"], m["compute"]["draft"]
        if rc["runs"] or dc["runs"]:
            out.append(f"  compute   recorded {_compute(rc)}; draft {_compute(dc)}")
        out.append(f"  differences: {len(m['differences'])}")
        for d in m["differences"]:
            kind = d["event_type"].rsplit(".", 1)[-1]
            out.append(
                f"    {d['at']}  {d['event_id']} ({kind})  recorded: {_labels(d['recorded'])}  "
                f"draft: {_labels(d['draft'])}"
            )
    out.extend(f"note: {n}" for n in report["notes"])
    return out


def cmd_backtest(args: argparse.Namespace) -> int:
    """Replay the ledger's events through the draft; print per model what differs. Nothing is changed."""
    path = Path(args.policy)
    if not path.is_file():
        raise InvalidInput(f"--policy {args.policy}: no such file; give the path of the draft policy to replay")
    report = backtester(Settings.from_env(), path).backtest(args.since, str(args.policy)).to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(lines(report)))
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay the recorded events through a draft policy: what it would have started, refused or skipped",
    )
    p.add_argument("--policy", required=True, help="the draft policy file to replay the events through")
    p.add_argument("--since", type=since, default=since("30d"), help="how far back: 30d (default), 12h, 1d12h")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=cmd_backtest)
