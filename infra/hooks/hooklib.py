"""Helpers of the azd hooks (infra/hooks/*.sh, *.ps1) that are easier to get right in Python.

    python hooklib.py topic WORKSPACE_ID [OUR_IDENTITY_ID] < topics.json   the workspace's system topic
    python hooklib.py logs-endpoints POLICY                 endpoints whose rollout health reads logs
    python hooklib.py packaged PATH                         fail if .funcignore leaves PATH out

``topic`` reads ``az eventgrid system-topic list -o json`` and prints, for the topic whose source is
the workspace (resource ids compare case-insensitively), three lines: its name, its resource group
and the base64 of {location, identityType, userAssignedIdentities, tags}, which infra/main.bicep
merges its own identity into (systemTopicState). Nothing is printed when there is none. Resource ids
are case-insensitive but JSON keys are not: an identity the topic already has under another casing
of OUR_IDENTITY_ID (the deployment's output RETRAIN_TOPIC_IDENTITY_ID), or twice, is passed once, so
that the deployment's union never names one identity twice.

``logs-endpoints`` prints the comma-separated endpoints of the models whose policy says
``deploy.rollout.health.source: logs`` (PyYAML; the policy's own validation is ``retrain
check-policy``). Only the standard library otherwise.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import sys
from pathlib import Path
from typing import Any


def topic(workspace_id: str, topics: list[dict[str, Any]], ours: str = "") -> list[str]:
    for found in topics:
        if str(found.get("source") or "").lower() == workspace_id.lower():
            identity = found.get("identity") or {}
            kept: dict[str, dict[str, Any]] = {}
            seen = {ours.lower()} if ours else set()
            for key in identity.get("userAssignedIdentities") or {}:
                if key.lower() not in seen:
                    seen.add(key.lower())
                    kept[key] = {}  # keys only: principal and client ids are read-only, not sent back
            state = {
                "location": found.get("location"),
                "identityType": identity.get("type") or "None",
                "userAssignedIdentities": kept,
                "tags": found.get("tags") or {},
            }
            encoded = base64.b64encode(json.dumps(state, sort_keys=True).encode()).decode()
            return [str(found["name"]), str(found["resourceGroup"]), encoded]
    return []


def logs_endpoints(policy: dict[str, Any]) -> list[str]:
    endpoints: list[str] = []
    for model in (policy.get("models") or {}).values():
        deploy = (model or {}).get("deploy") or {}
        health = (deploy.get("rollout") or {}).get("health") or {}
        if health.get("source") == "logs" and deploy.get("endpoint") and deploy["endpoint"] not in endpoints:
            endpoints.append(str(deploy["endpoint"]))
    return endpoints


def excluded_by(path: str, funcignore: str) -> str | None:
    """The .funcignore line (gitignore syntax, simplified: no negation) that leaves ``path`` out."""
    parts = Path(path).as_posix().lstrip("./").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in funcignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith(("#", "!")):
            continue
        bare = pattern.rstrip("/").lstrip("/")
        directory_only = pattern.endswith("/")
        candidates = prefixes[:-1] if directory_only else prefixes
        names = candidates + ([p.split("/")[-1] for p in candidates] if "/" not in bare else [])
        if any(fnmatch.fnmatchcase(name, bare) for name in names):
            return pattern
    return None


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "topic":
        print("\n".join(topic(argv[1], json.load(sys.stdin) or [], *argv[2:])))
        return 0
    if len(argv) == 2 and argv[0] == "logs-endpoints":
        import yaml

        print(",".join(logs_endpoints(yaml.safe_load(Path(argv[1]).read_text(encoding="utf-8")) or {})))
        return 0
    if len(argv) == 2 and argv[0] == "packaged":
        ignore = Path(".funcignore")
        line = excluded_by(argv[1], ignore.read_text(encoding="utf-8")) if ignore.is_file() else None
        if line:
            print(
                f"{argv[1]} is left out of the function package by the line {line!r} of .funcignore; "
                "keep the policy where the package includes it (the repository root, or policies/)",
                file=sys.stderr,
            )
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
