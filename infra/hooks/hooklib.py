"""Helpers of the azd hooks (infra/hooks/*.sh, *.ps1) that are easier to get right in Python.

    python hooklib.py topic WORKSPACE_ID < topics.json      the workspace's system topic
    python hooklib.py logs-endpoints POLICY                 endpoints whose rollout health reads logs
    python hooklib.py new-data POLICY                       the storage account and container/prefix pairs of new data
    python hooklib.py packaged PATH                         fail if .funcignore leaves PATH out

``topic`` reads ``az eventgrid system-topic list -o json`` and prints, for the topic whose source is
the workspace (resource ids compare case-insensitively), three lines: its name, its resource group
and the base64 of {location, identityType, userAssignedIdentities, tags}, which infra/main.bicep
PUTs back with the topic's system-assigned identity added (systemTopicState). Nothing is printed
when there is none. The user-assigned identities are passed on as the topic lists them, except:
- one listed twice under two casings (resource ids are case-insensitive, JSON keys are not) once;
- one that no longer exists (``az identity show --ids`` answers ResourceNotFound or
  ResourceGroupNotFound: a deleted environment's, say) is dropped, because a PUT naming it fails;
  one that cannot be read (no access to its subscription) is kept, with a warning;
- more than two (a system topic holds one system-assigned and at most two user-assigned
  identities) is refused with exit code 1 and what to do.

``logs-endpoints`` prints the comma-separated endpoints of the models whose policy says
``deploy.rollout.health.source: logs`` (PyYAML; the policy's own validation is ``retrain
check-policy``). Only the standard library otherwise.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Event Grid, "Enable managed identity for system topics": one system-assigned and at most two
# user-assigned identities per system topic.
MAX_USER_ASSIGNED = 2
GONE = ("ResourceNotFound", "ResourceGroupNotFound")


class TopicRefused(Exception):
    """The topic cannot take this deployment; the message says what to do."""


def identity_exists(resource_id: str) -> bool | None:
    """Whether the identity exists: True, False (Azure says it is not found), None (cannot tell)."""
    az = shutil.which("az") or "az"
    command = [az, "identity", "show", "--ids", resource_id, "--query", "id", "-o", "tsv"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603  (an argv, no shell)
    if done.returncode == 0:
        return True
    return False if any(code in done.stderr for code in GONE) else None


def topic(
    workspace_id: str,
    topics: list[dict[str, Any]],
    exists: Callable[[str], bool | None] = identity_exists,
    warn: Callable[[str], None] = lambda message: None,
) -> list[str]:
    for found in topics:
        if str(found.get("source") or "").lower() != workspace_id.lower():
            continue
        identity = found.get("identity") or {}
        kept: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        for key in identity.get("userAssignedIdentities") or {}:
            if key.lower() in seen:
                continue
            seen.add(key.lower())
            state = exists(key)
            if state is False:
                warn(f"dropping the user-assigned identity {key} from the topic: it no longer exists")
                continue
            if state is None:
                warn(f"cannot read the user-assigned identity {key}; keeping it on the topic")
            kept[key] = {}  # keys only: principal and client ids are read-only, not sent back
        if len(kept) > MAX_USER_ASSIGNED:
            raise TopicRefused(
                f"the system topic {found['name']} (resource group {found['resourceGroup']}) lists "
                f"{len(kept)} user-assigned identities and Event Grid allows at most {MAX_USER_ASSIGNED}: "
                "remove the ones nobody uses (portal: the topic > Identity > User assigned), then run azd "
                "provision again. This service adds none; it dead-letters with the topic's system-assigned "
                "identity. Still listed: " + ", ".join(kept)
            )
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


def new_data(policy: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    """The storage account the models' ``retrain.on.data.blobs`` name (``''`` unless exactly one), the
    ``container/prefix`` pairs of it they name (one Event Grid subscription each), and the other accounts
    (infra/ subscribes to one account; the others' subscriptions are the user's to create)."""
    accounts: dict[str, str] = {}
    pairs: dict[str, list[str]] = {}
    for model in (policy.get("models") or {}).values():
        retrain = (model or {}).get("retrain") or {}
        on = retrain.get("on", retrain.get(True)) or {}  # PyYAML reads a bare on: as the boolean true
        for blob in (((on or {}).get("data") or {}).get("blobs")) or []:
            account = str((blob or {}).get("account") or "").strip().rstrip("/")
            if not account:
                continue
            key = account.lower()
            accounts.setdefault(key, account)
            container, prefix = str(blob.get("container") or ""), str(blob.get("prefix") or "")
            pair = f"{container}/{prefix}" if prefix else container
            if pair and pair not in pairs.setdefault(key, []):
                pairs[key].append(pair)
    if len(accounts) != 1:
        return "", [], sorted(accounts.values())
    [(key, account)] = accounts.items()
    return account, pairs[key], []


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
    if len(argv) == 2 and argv[0] == "topic":
        try:
            found = topic(argv[1], json.load(sys.stdin) or [], warn=lambda m: print(m, file=sys.stderr))
        except TopicRefused as refused:
            print(refused, file=sys.stderr)
            return 1
        print("\n".join(found))
        return 0
    if len(argv) == 2 and argv[0] == "logs-endpoints":
        import yaml

        print(",".join(logs_endpoints(yaml.safe_load(Path(argv[1]).read_text(encoding="utf-8")) or {})))
        return 0
    if len(argv) == 2 and argv[0] == "new-data":
        import yaml

        account, pairs, others = new_data(yaml.safe_load(Path(argv[1]).read_text(encoding="utf-8")) or {})
        if others:
            print(
                f"the policy names {len(others)} storage accounts for new data ({', '.join(others)}); infra/ subscribes "
                "to one: create each account's BlobCreated subscription yourself (docs/policy.md, New data)",
                file=sys.stderr,
            )
        print(account)
        print(",".join(pairs))
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
