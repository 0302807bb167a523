"""Event storms delivered by several OS processes, each a worker of its own, sharing one ledger.

Each worker is what a function app instance is: its own service, its own ledger client, the same
policy. It delivers its share of events the way Event Grid does: an answer of TransientError means
"deliver again later", so the event goes back on the worker's queue. Jobs are journalled in a
file that stands for the workspace: a job name already there is adopted, as Azure ML adopts a
job of an existing name, and only a new name is a new job (one line).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from handlers.errors import TransientError
from handlers.plans import JobPlan
from handlers.workspace_ports import ActionResult, JobInfo
from handlers.worthiness import RetrainFacts


@dataclass
class JournalActions:
    """A workspace shared by processes: the file lists the jobs created, one per line."""

    journal: str
    name: str = "journal"
    calls: int = 0

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        self.calls += 1
        with open(self.journal, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            adopted = plan.name in f.read().split()
            if not adopted:
                f.write(plan.name + "\n")
                f.flush()
                os.fsync(f.fileno())
        return ActionResult("submitted", job={"name": plan.name, "url": None}, details={"adopted": adopted})

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        """The journalled job of the plan's name, adopted (a worker of its decision submitted it); None when none is."""
        if plan.name not in jobs_in(Path(self.journal)):
            return None
        return ActionResult("submitted", job={"name": plan.name, "url": None}, details={"adopted": True})

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        """A journal keeps no lineage and no monitor runs: the checks have nothing to judge, the retrain goes ahead."""
        return RetrainFacts(notes=("the storm's workspace keeps no lineage",))

    def job_status(self, name: str) -> JobInfo | None:  # pragma: no cover - storms end before any grace period
        """A journalled job runs forever: nothing in a storm finishes it."""
        return JobInfo(name, "Running", "storm") if name in jobs_in(Path(self.journal)) else None


def jobs_in(journal: Path) -> list[str]:
    return journal.read_text(encoding="utf-8").split() if journal.exists() else []


def event_statuses(spec: Any, workspace: str, event_type: str, ids: list[str]) -> list[Any]:
    """What the ledger ``spec`` says of each event id, read by a process of its own (a pool of them
    reads a storm's ten thousand ids on every core; threads of one process would share one)."""
    from concurrent.futures import ThreadPoolExecutor

    from handlers.signals import Trigger

    ledger = spec.open()
    with ThreadPoolExecutor(4) as pool:  # overlaps the round trips
        return list(pool.map(lambda i: ledger.event_status(Trigger(workspace, i, event_type)), ids))


@dataclass
class WorkerReport:
    worker: int
    delivered: int = 0  # answered 200
    transient: int = 0  # answered "retry later" (and delivered again)
    errors: list[str] = field(default_factory=list)  # anything else: a bug
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    submit_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "delivered": self.delivered,
            "transient": self.transient,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "outcomes": dict(self.outcomes),
            "submit_calls": self.submit_calls,
        }


def work(
    worker: int,
    spec: Any,
    policy_path: str,
    workspace: str,
    journal: str,
    deliveries: list[str],
    out: str,
    progress: Any = None,
    lease_s: float = 60.0,
    stall_s: float = 180.0,
) -> None:
    """Deliver ``deliveries`` (raw Event Grid bodies) through a worker of this process's own, assembled
    as a function app instance assembles it, with claims leased for ``lease_s``. A worker gives up only
    when it has made no progress (no delivery answered) for ``stall_s``: a busy machine is slow, a
    stuck ledger makes no progress."""
    from function_app.adapters.dryrun import DryRunActions
    from handlers.envelopes import parse_body
    from handlers.policy_file import load_policy
    from handlers.wiring import assemble, start

    report = WorkerReport(worker)
    rng = random.Random(worker)
    last_progress = time.monotonic()
    try:
        actions = JournalActions(journal)
        worker = assemble(
            load_policy(Path(policy_path)),
            spec.open(),
            actions,
            DryRunActions(),
            lambda: datetime.now(UTC),
            [workspace],
            lease=timedelta(seconds=lease_s),
        )
        service = start(worker).service  # started as an instance starts: its ledger adopts the policy's models
        queue = list(deliveries)
        while queue:
            body = queue.pop(0)
            if time.monotonic() - last_progress > stall_s:
                report.errors.append(f"no delivery answered for {stall_s:.0f} s; gave up with {len(queue) + 1} left")
                break
            try:
                [env] = parse_body(body)
                result = service.handle_envelope(env)
            except TransientError:
                report.transient += 1
                queue.append(body)  # Event Grid delivers it again later
                time.sleep(rng.uniform(0.01, 0.05))
                continue
            except Exception:  # any other answer is a finding of the test
                report.errors.append(traceback.format_exc(limit=5))
                continue
            report.delivered += 1
            last_progress = time.monotonic()
            report.statuses[result.status] += 1
            for d in result.decisions:
                report.outcomes[d.outcome] += 1
            if progress is not None:
                with progress.get_lock():
                    progress.value += 1
        report.submit_calls = actions.calls
    except Exception:  # reported, not raised: the parent reads the report
        report.errors.append(traceback.format_exc(limit=8))
    Path(out).write_text(json.dumps(report.to_dict()), encoding="utf-8")
