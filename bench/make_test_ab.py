"""How long `make test` takes on a clean clone, for two or more commits measured in one sitting.

This machine's speed changes a lot from hour to hour (the same suite has taken 9 and 21 minutes on
the same day), so a figure means something only beside another measured at the same time. Each round
clones every commit afresh (as CI does) and runs ``make test`` as CI runs it (``CI=true``, one
command: its installs and checks may run side by side, so the whole is what is timed); the commits
alternate within a round. Nothing is shared between clones but the pip, uv and npm caches.

    .venv/bin/python bench/make_test_ab.py 69da337 HEAD --rounds 2 --shared ../shared

Beside the total it prints where the time went, read off ``make``'s output as it comes: ``setup``, from
the start to the first pytest command (the installs, lint, types, docs and infra checks), then what
pytest reports for the non-storm tests and for the storms, and the CPU time (user + system) of
everything ``make`` ran.

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
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ("setup", "tests", "storms", "total", "cpu")
_DURATION = re.compile(r"^([0-9.]+)s call\s+(\S+)$", re.MULTILINE)
_PASSED = re.compile(r"^=* ?(\d+) passed.* in ([0-9.]+)s", re.MULTILINE)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


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
    log = root / "make.log"
    cpu = _children_cpu()
    started = time.monotonic()
    setup = None
    with log.open("w", encoding="utf-8") as out:
        make = subprocess.Popen(
            ["make", "test"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert make.stdout is not None
        for line in make.stdout:
            out.write(line)
            if setup is None and "-m pytest" in line:
                setup = time.monotonic() - started
        ok = make.wait() == 0
    total = time.monotonic() - started
    text = log.read_text(encoding="utf-8")
    passed = [(int(n), float(s)) for n, s in _PASSED.findall(text)]
    slowest = sorted(((float(s), t) for s, t in _DURATION.findall(text)), reverse=True)
    return {
        "commit": commit,
        "ok": ok,
        "setup": round(setup or total, 1),
        "tests": passed[0][1] if passed else None,
        "storms": passed[1][1] if len(passed) > 1 else None,
        "passed": sum(n for n, _ in passed),
        "total": round(total, 1),
        "cpu": round(_children_cpu() - cpu, 1),
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
    print(f"{'round':>5} {'commit':>10} {'ok':>3} {'passed':>6} " + " ".join(f"{c:>7}" for c in COLUMNS))
    try:
        for n in range(1, args.rounds + 1):
            for commit in commits:
                result = run_once(commit, work, args.shared)
                result["round"] = n
                with args.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(result) + "\n")
                cells = " ".join(
                    f"{result[c]:>6.0f}s" if isinstance(result[c], float) else f"{'-':>7}" for c in COLUMNS
                )
                print(f"{n:>5} {commit:>10} {'yes' if result['ok'] else 'NO':>3} {result['passed']:>6} {cells}")
                print(f"{'':>20}slowest: {result['slowest']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
