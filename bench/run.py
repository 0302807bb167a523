"""Benchmarks, run with `make bench` (figures go into docs/benchmarks.md).

(a) Cold start: median wall time and peak RSS of a fresh interpreter importing the app's root
    script, beside one importing only azure.functions, interleaved in the same run; and the root
    script again with telemetry configured (APPLICATIONINSIGHTS_CONNECTION_STRING set to a dummy
    connection string: the distro must not load before first use).
(b) Throughput: decisions per second and p50/p99 latency of parse -> decide -> guard -> record
    through the service as a worker assembles it, one process, with the SQLite ledger on a temp file and the Table
    ledger on Azurite (started by bench/ledger_bench.py), in the same run.
(c) Round trips: Table requests per drift event, per deploying run and per idle reconciler pass
    (bench/round_trips.py, on an Azurite of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORKSPACE = (
    "/subscriptions/{subscription-id}/resourceGroups/{resource-group-name}"
    "/providers/Microsoft.MachineLearningServices/workspaces/{workspace-name}"
)


# A well-formed connection string that reaches nothing (importing must not even read it).
DUMMY_CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://example.invalid/"
TELEMETRY = "root script, telemetry set"


def _one_process(code: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh interpreter running ``code``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark process failed: {code!r}")
    return wall, usage.ru_maxrss / 1024


def cold_start(rounds: int) -> dict[str, dict[str, float]]:
    telemetry = {"APPLICATIONINSIGHTS_CONNECTION_STRING": DUMMY_CONNECTION}
    cases: dict[str, tuple[str, dict[str, str] | None]] = {
        "azure.functions only": ("import azure.functions", None),
        "root script (main.py)": ("import main", None),
        TELEMETRY: ("import main", telemetry),
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for code, env in cases.values():  # warm the OS file cache once per case, not measured
        _one_process(code, env)
    for _ in range(rounds):
        for name, (code, env) in cases.items():  # interleaved, so drift in machine load hits all alike
            samples[name].append(_one_process(code, env))
    return {
        name: {"median_ms": statistics.median(w for w, _ in s) * 1000, "peak_rss_mib": max(r for _, r in s)}
        for name, s in samples.items()
    }


def drift(event_id: str, monitor: str = "myDriftMonitor") -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": WORKSPACE,
        "subject": "datadrifts/x/runs/y",
        "eventType": "Microsoft.MachineLearningServices.DatasetDriftDetected",
        "eventTime": "2026-11-25T10:00:00Z",
        "data": {"DataDriftName": monitor, "DriftCoefficient": 0.8, "TargetDatasetId": "ds", "BaseDatasetId": "b"},
        "dataVersion": "",
        "metadataVersion": "1",
    }


def throughput(make_ledger: Callable[[], Any], n: int) -> dict[str, float]:
    """parse -> decide -> guard -> record for ``n`` distinct drift events (one model: one retrain, the
    rest skipped by the guards, which is the storm case the ledger must absorb)."""
    from function_app.adapters.dryrun import DryRunActions
    from handlers import wiring
    from handlers.envelopes import parse_body
    from handlers.policy_file import load_policy

    policy = load_policy(REPO / "examples" / "policy.yaml")
    now = [datetime(2026, 11, 25, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(milliseconds=1)
        return now[0]

    dry = DryRunActions()
    worker = wiring.start(wiring.assemble(policy, make_ledger(), dry, dry, clock, [WORKSPACE]))  # as a worker starts
    service = worker.service
    bodies = [json.dumps([drift(str(uuid.uuid4()))]).encode() for _ in range(n)]
    latencies = []
    start = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        for env in parse_body(body):
            service.handle_envelope(env)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "events": n,
        "per_second": n / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="cold-start processes per case")
    parser.add_argument("--events", type=int, default=5000, help="events for the throughput run")
    parser.add_argument("--table-events", type=int, default=2000, help="events for the Table ledger run")
    parser.add_argument("--no-table", action="store_true", help="skip the Table ledger (no Azurite)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"}
    results["cold_start"] = cold_start(args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        from function_app.adapters.sqlite_ledger import SqliteLedger

        results["throughput"] = {"sqlite": throughput(lambda: SqliteLedger(Path(tmp) / "bench.db"), args.events)}
    if not args.no_table:
        from bench import ledger_bench

        results["throughput"].update(ledger_bench.table_results(args.table_events, throughput))
        from bench import round_trips

        results["round_trips"] = round_trips.results()

    if args.json:
        results["round_trips"] = {k: len(v) for k, v in results.get("round_trips", {}).items()}
        print(json.dumps(results, indent=2))
        return 0
    cs = results["cold_start"]
    base, app = cs["azure.functions only"], cs["root script (main.py)"]
    print(f"machine: {results['machine']}")
    print(f"cold start ({args.rounds} fresh processes each, interleaved):")
    for name, r in cs.items():
        print(f"  {name:28} median {r['median_ms']:7.1f} ms   peak RSS {r['peak_rss_mib']:6.1f} MiB")
    print(
        f"  ratio root/azure.functions: {app['median_ms'] / base['median_ms']:.2f}x time, "
        f"{app['peak_rss_mib'] / base['peak_rss_mib']:.2f}x memory (goal: time <= 1.5x)"
    )
    traced = cs[TELEMETRY]
    print(
        f"  ratio root with telemetry set/azure.functions: {traced['median_ms'] / base['median_ms']:.2f}x time, "
        f"{traced['peak_rss_mib'] / base['peak_rss_mib']:.2f}x memory (goal: time <= 1.5x)"
    )
    print("parse -> decide -> guard -> record:")
    for name, r in results["throughput"].items():
        print(
            f"  {name:8} {r['events']:6d} events  {r['per_second']:8.0f} decisions/s   p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms"
        )
    if "round_trips" in results:
        from bench import round_trips

        round_trips.print_results(results["round_trips"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
