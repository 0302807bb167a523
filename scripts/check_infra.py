"""Offline checks of the Bicep in infra/: every file parses, and checkov passes with no surprises.

Run with the infra virtual environment (checkov and pycep live there, apart from the app's pins):

    .venv-infra/bin/python scripts/check_infra.py            # infra/ and .checkov.yaml
    .venv-infra/bin/python scripts/check_infra.py --infra DIR --config FILE

It fails (exit 1, one line per problem) when:
- a .bicep file does not parse with pycep, the parser checkov itself uses;
- checkov reports a parsing error, scans fewer files than infra/ holds, or crashes;
- checkov reports a failed check;
- a check is skipped anywhere but in the config file (an inline ``checkov:skip`` comment);
- a skipped check in the config file has no reason comment on its line.

Only the standard library is imported at module level, so the app's tests can import the pure
functions (``evaluate``, ``skips_without_reason``...) without checkov installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

_START = re.compile(r"\[bicep\] start to parse (\d+) files")
_PARSED = re.compile(r"\[bicep\] successfully parsed (\d+) files")
_SKIP_LINE = re.compile(r"^\s*-\s*(CKV2?_[A-Z0-9_]+)\s*(#\s*(\S.*))?$")


def bicep_files(infra: Path) -> list[Path]:
    """Every Bicep file under ``infra``, as checkov finds them (recursively)."""
    return sorted(p for p in infra.rglob("*.bicep") if p.is_file())


def unparsable(files: Iterable[Path]) -> list[str]:
    """Files pycep cannot parse, each with the parser's first line of complaint."""
    from pycep import BicepParser  # only the infra venv has pycep: imported here, not at the top

    parser = BicepParser()
    problems = []
    for path in files:
        try:
            parser.parse(text=path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001  (lark raises many types; each is a parse failure to report)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            problems.append(f"{path}: does not parse (pycep): {first}")
    return problems


def config_skips(config_text: str) -> dict[str, str]:
    """Check ids in the config's ``skip-check`` list, each with its reason comment ('' when none)."""
    skips: dict[str, str] = {}
    in_list = False
    for line in config_text.splitlines():
        if re.match(r"^skip-check\s*:", line):
            in_list = True
            continue
        if in_list and re.match(r"^\S", line):  # the next top-level key ends the list
            in_list = False
        if not in_list:
            continue
        match = _SKIP_LINE.match(line)
        if match:
            skips[match.group(1)] = (match.group(3) or "").strip()
    return skips


def skips_without_reason(skips: dict[str, str], source: str = ".checkov.yaml") -> list[str]:
    return [
        f"{source}: skip-check {check}: no reason; write it on the same line after '#'"
        for check, reason in skips.items()
        if not reason
    ]


def _reports(output: Any) -> list[dict[str, Any]]:
    """checkov prints one report object, or a list of them (one per framework)."""
    if isinstance(output, list):
        return [r for r in output if isinstance(r, dict)]
    if isinstance(output, dict):
        return [output]
    return []


def evaluate(output: Any, log: str, expected_files: int) -> list[str]:
    """Problems in one checkov run: its JSON output, its INFO log (stderr) and what it should have seen."""
    problems: list[str] = []
    reports = _reports(output)
    if not reports:
        problems.append("checkov printed no report")
    for report in reports:
        results = report.get("results") or {}
        summary = report.get("summary") or {}
        errors = results.get("parsing_errors") or []
        problems += [f"{path}: checkov could not parse it" for path in errors]
        if summary.get("parsing_errors") and not errors:
            problems.append(f"checkov reports {summary['parsing_errors']} parsing error(s)")
        for check in results.get("failed_checks") or []:
            problems.append(
                f"{check.get('file_path')}: {check.get('resource')}: {check.get('check_id')} failed: "
                f"{check.get('check_name')} (fix it, or skip it in .checkov.yaml with a reason)"
            )
        # Checks skipped in the config file are not run at all, so any skip reported here comes from
        # an inline suppression comment in the Bicep.
        for check in results.get("skipped_checks") or []:
            problems.append(
                f"{check.get('file_path')}: {check.get('resource')}: {check.get('check_id')} is skipped "
                "by an inline comment; list the skip in .checkov.yaml with its reason instead"
            )
    started = [int(n) for n in _START.findall(log)]
    parsed = [int(n) for n in _PARSED.findall(log)]
    if not started or not parsed:
        problems.append("checkov's log does not say how many Bicep files it parsed (was LOG_LEVEL=INFO set?)")
    else:
        if started[-1] < expected_files:
            problems.append(f"checkov found {started[-1]} Bicep file(s), infra/ holds {expected_files}")
        if parsed[-1] < expected_files:
            problems.append(f"checkov parsed {parsed[-1]} of {expected_files} Bicep file(s)")
    return problems


def run_checkov(infra: Path, config: Path) -> tuple[Any, str, int]:
    """Run the checkov CLI of this interpreter's environment; return (JSON output, log, exit code)."""
    command = [
        sys.executable, "-m", "checkov.main",
        "-d", str(infra),
        "--framework", "bicep",
        "--skip-download",
        "-o", "json",
        "--config-file", str(config),
    ]  # fmt: skip
    env = {**os.environ, "LOG_LEVEL": "INFO", "BC_SKIP_MAPPING": "TRUE"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603  (fixed argv)
    try:
        output = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        output = None
    return output, done.stderr, done.returncode


def check(infra: Path, config: Path) -> list[str]:
    files = bicep_files(infra)
    if not files:
        return [f"{infra}: no .bicep files"]
    problems = unparsable(files)
    skips = config_skips(config.read_text(encoding="utf-8"))
    problems += skips_without_reason(skips, config.name)
    output, log, code = run_checkov(infra, config)
    if output is None:
        tail = "\n  ".join(log.strip().splitlines()[-15:])
        problems.append(f"checkov produced no JSON report (exit {code}):\n  {tail}")
    else:
        problems += evaluate(output, log, len(files))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--infra", type=Path, default=REPO / "infra", help="folder of the Bicep files")
    parser.add_argument("--config", type=Path, default=REPO / ".checkov.yaml", help="checkov config file")
    args = parser.parse_args(argv)
    problems = check(args.infra, args.config)
    if problems:
        print(f"check_infra: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    count = len(bicep_files(args.infra))
    print(f"check_infra: {count} Bicep file(s) parse; checkov: no parsing errors, no failed checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
