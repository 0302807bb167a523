"""How long `make test` takes on a clean clone, for two or more commits measured in one sitting.

This machine's speed changes a lot from hour to hour (the same suite has taken 9 and 21 minutes on
the same day), so a figure means something only beside another measured at the same time. Each round
clones every commit afresh (as CI does), runs the phases of `make test` one after the other and
times each; the commits alternate within a round. Nothing is shared between clones but the pip and
npm caches.

    .venv/bin/python bench/make_test_ab.py 69da337 HEAD --rounds 2 --shared ../shared

``--shared`` puts a folder beside the clone of a commit that has no ``tests/data/events`` of its
own, as ``../shared``: commits before 2026-12-02 read the published sample events from there.
Results go to stdout as a table and, one JSON object a run, to ``--out`` (default
``.retrain/make_test_ab.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = ("install node_modules/.bin/azurite", "lint", "typecheck", "check-infra", "unit")
_DURATION = re.compile(r"^([0-9.]+)s call\s+(\S+)$", re.MULTILINE)


def run_once(commit: str, work: Path, shared: Path | None) -> dict[str, object]:
    root = work / commit
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    clone = root / "main"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True)
    if shared is not None and not (clone / "tests" / "data" / "events").is_dir():
        (root / "shared").symlink_to(shared.resolve())  # only for a commit that needs it
    env = {**os.environ, "CI": "true", "PYTEST_ADDOPTS": "--durations=3"}
    phases: dict[str, float] = {}
    log = root / "make.log"
    ok = True
    with log.open("w", encoding="utf-8") as out:
        for phase in PHASES:
            started = time.monotonic()
            done = subprocess.run(
                ["make", *phase.split()], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
            phases[phase.split()[0]] = round(time.monotonic() - started, 1)
            ok = ok and done.returncode == 0
    slowest = sorted(((float(s), t) for s, t in _DURATION.findall(log.read_text(encoding="utf-8"))), reverse=True)
    return {
        "commit": commit,
        "ok": ok,
        "phases": phases,
        "total": round(sum(phases.values()), 1),
        "slowest": [[t.split("/")[-1], s] for s, t in slowest[:3]],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs="+", help="two or more commits (any git revision)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--shared", type=Path, default=None, help="../shared for commits without tests/data/events")
    parser.add_argument("--out", type=Path, default=REPO / ".retrain" / "make_test_ab.jsonl")
    args = parser.parse_args()
    commits = [
        subprocess.run(
            ["git", "rev-parse", "--short", c], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        for c in args.commits
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="make-test-ab-"))
    print(f"{'round':>5} {'commit':>10} {'ok':>3} " + " ".join(f"{p.split()[0]:>11}" for p in PHASES) + "   total")
    try:
        for n in range(1, args.rounds + 1):
            for commit in commits:
                result = run_once(commit, work, args.shared)
                result["round"] = n
                with args.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(result) + "\n")
                phases = result["phases"]
                assert isinstance(phases, dict)
                cells = " ".join(f"{phases[p.split()[0]]:>10.0f}s" for p in PHASES)
                print(f"{n:>5} {commit:>10} {'yes' if result['ok'] else 'NO':>3} {cells} {result['total']:>7.0f}s")
                print(f"{'':>20}slowest: {result['slowest']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
