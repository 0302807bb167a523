"""Webhook batches against Event Grid's 30 s: how long each delivery of a large batch takes to answer,
and how many deliveries it takes until every event is handled (docs/benchmarks.md).

The local host (`retrain host`, a real process) serves the webhook with the Table ledger on Azurite
(started here on free ports of 127.0.0.1 and stopped at the end) and the dry-run backend. A batch of
about SIZE bytes of workspace events (drift for the policy's monitors and for unknown ones, monitor
breaches, finished runs of other experiments; a mix drawn from SEED) is posted as Event Grid posts
it, and posted again while the answer is a 503, as Event Grid redelivers; the time Event Grid would
wait between deliveries is not simulated. Azurite is one Node.js process on this machine, not the
Azure Table service: the figures say what the code path costs with a real HTTP round trip per ledger
call, not what Azure will do.

    .venv/bin/python bench/batch_bench.py                    # 256 KB, 512 KB, 1 MB; seeds 1, 2, 3
    .venv/bin/python bench/batch_bench.py --sizes 1048576 --seeds 7
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.azurite import Azurite, free_port  # noqa: E402 (after the path: run as a script)
from tests.builders import breach_event, drift_event, run_event  # noqa: E402

EVENT_GRID_WAITS = 30.0


def batch_of(size: int, seed: int) -> list[dict[str, Any]]:
    """Events until the JSON body holds about ``size`` bytes (Event Grid's batch limit is 1 MB)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    total = 2
    while True:
        n = f"{size}-{seed}-{len(events)}"  # ids of their own: another batch's events are not duplicates
        kind = rng.random()
        if kind < 0.5:  # drift for a monitor the example policy names, or for one nobody listens to
            event = drift_event(monitor=rng.choice(["myDriftMonitor", f"other-{rng.randrange(50)}"]), event_id=n)
        elif kind < 0.75:
            event = breach_event(experiment=rng.choice(["diabetes-monitor", "churn-monitor"]), event_id=n)
        else:
            event = run_event(run_id=f"run-{n}", experiment=f"exp-{rng.randrange(20)}", event_id=n)
        total += len(json.dumps(event)) + 2
        if total > size:
            return events
        events.append(event)


def post(port: int, body: bytes) -> tuple[int, dict[str, Any], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", "/api/events", body, {"Content-Type": "application/json", "aeg-event-type": "Notification"})
    reply = conn.getresponse()
    data = json.loads(reply.read() or b"{}")
    took = time.perf_counter() - started
    conn.close()
    return reply.status, data, took


def run_one(port: int, size: int, seed: int) -> dict[str, Any]:
    events = batch_of(size, seed)
    body = json.dumps(events).encode()
    deliveries: list[dict[str, Any]] = []
    while len(deliveries) < 50:
        status, data, took = post(port, body)
        statuses = [r.get("status") for r in data.get("results", [])]
        deliveries.append(
            {
                "status": status,
                "seconds": round(took, 2),
                "new": statuses.count("processed"),
                "duplicate": statuses.count("duplicate"),
                "deferred": statuses.count("deferred"),
            }
        )
        if status == 200:
            break
    return {
        "bytes": len(body),
        "events": len(events),
        "seed": seed,
        "deliveries": deliveries,
        "slowest_answer_s": max(d["seconds"] for d in deliveries),
        "within_30s": all(d["seconds"] < EVENT_GRID_WAITS for d in deliveries),
        "all_handled": deliveries[-1]["status"] == 200,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256 * 1024, 512 * 1024, 1024 * 1024])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--deadline", default="25", help="RETRAIN_DEADLINE_SECONDS for the host (default 25)")
    args = parser.parse_args(argv)

    azurite = Azurite().start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "host.log", "w+") as log:
        host = subprocess.Popen(
            [sys.executable, "-m", "function_app.cli", "host", "--port", str(port)],
            cwd=REPO,
            env={
                **os.environ,
                "RETRAIN_LEDGER": "table",
                "RETRAIN_TABLES_CONNECTION": azurite.connection_string,
                "RETRAIN_TABLE_PREFIX": "batchbench",
                "RETRAIN_DEADLINE_SECONDS": args.deadline,
                "RETRAIN_JOB_NAME_KEY": secrets.token_hex(32),
                "RETRAIN_SQLITE_PATH": str(Path(tmp) / "unused.db"),
            },
            stdout=subprocess.DEVNULL,
            stderr=log,  # a file: a pipe nobody reads would fill and stop the host
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/api/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if host.poll() is not None or time.monotonic() > deadline:
                    host.kill()
                    log.seek(0)
                    print(f"the local host did not start: {log.read()[-2000:]}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            results = [run_one(port, size, seed) for size in args.sizes for seed in args.seeds]
        finally:
            host.terminate()
            host.wait(timeout=30)
            azurite.close()
    print(json.dumps(results, indent=2))
    print("\n| batch | events | seed | deliveries until done | answers (s, status: new/duplicate/deferred) |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        answers = ", ".join(
            f"{d['seconds']} s {d['status']}: {d['new']}/{d['duplicate']}/{d['deferred']}" for d in r["deliveries"]
        )
        print(f"| {r['bytes'] // 1024} KiB | {r['events']} | {r['seed']} | {len(r['deliveries'])} | {answers} |")
    return 0 if all(r["within_30s"] and r["all_handled"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
