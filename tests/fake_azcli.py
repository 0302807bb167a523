"""Fake ``az`` and ``azd`` for the hook tests: one Python script, put first on PATH under both names.

Each call is appended to the world file's ``calls`` and answered from its state, the way the real
tools and Azure behave (as the project's notes of Azure's documented behaviour say), not the way the hooks expect:
- ``az eventgrid system-topic list`` returns every topic of the subscription, whatever its source;
- ``az functionapp function show`` fails until the function is indexed (``index_after`` shows);
- ``azd provision`` with RETRAIN_EVENT_SUBSCRIPTIONS=true creates the subscriptions only if the
  function is indexed, and otherwise fails as Event Grid does ("Destination endpoint not found");
- ``azd env set`` writes the azd environment (``env``), which the tests read back.

The world file is JSON; :func:`install` writes the scripts and returns the PATH to use.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def install(bin_dir: Path, world_file: Path) -> dict[str, str]:
    """Write ``az`` and ``azd`` into ``bin_dir``; return the environment variables that select them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("az", "azd"):
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
            f"from tests.fake_azcli import main\nsys.exit(main({name!r}))\n",
            encoding="utf-8",
        )
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_WORLD": str(world_file)}


def _option(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _indexed(world: dict[str, Any], function: str) -> bool:
    """Indexed once deployed and asked about more than ``index_after`` times (indexing takes a while)."""
    return function in world.get("functions", []) and world["show_calls"] > world.get("index_after", 0)


def _az(argv: list[str], world: dict[str, Any]) -> int:
    command = " ".join(a for a in argv if not a.startswith("-"))[:60]
    if argv[:2] == ["account", "show"]:
        print(world["subscription"])
        return 0
    if argv[:2] == ["resource", "show"]:
        workspace = world["workspace"]
        if _option(argv, "-n") == workspace["name"] and _option(argv, "-g") == workspace["resourceGroup"]:
            print(workspace["id"])
            return 0
        print(f"(ResourceNotFound) The Resource '{_option(argv, '-n')}' was not found.", file=sys.stderr)
        return 3
    if argv[:3] == ["eventgrid", "system-topic", "list"]:
        print(json.dumps(world.get("topics", [])))
        return 0
    if argv[:4] == ["eventgrid", "system-topic", "event-subscription", "list"]:
        topic = _option(argv, "--system-topic-name")
        if not any(t["name"] == topic for t in world.get("topics", [])):
            print(f"(ResourceNotFound) system topic {topic} not found", file=sys.stderr)
            return 3
        print("\n".join(world.get("event_subscriptions", {}).get(topic, [])))
        return 0
    if argv[:3] == ["functionapp", "function", "show"]:
        world["show_calls"] = world.get("show_calls", 0) + 1
        if _indexed(world, _option(argv, "--function-name") or ""):
            print(_option(argv, "--function-name"))
            return 0
        print("(NotFound) Error retrieving function.", file=sys.stderr)
        return 3
    print(f"fake az: unsupported command {command!r}", file=sys.stderr)
    return 2


def _azd(argv: list[str], world: dict[str, Any]) -> int:
    env = world.setdefault("env", {})
    if argv[:2] == ["env", "set"] and len(argv) == 4:
        env[argv[2]] = argv[3]
        return 0
    if argv[:1] == ["provision"]:
        if world.get("provision_fails"):
            print("ERROR: deployment failed: (Conflict) another operation is in progress", file=sys.stderr)
            return 1
        if env.get("RETRAIN_EVENT_SUBSCRIPTIONS") == "true":
            if "on_workspace_event" not in world.get("functions", []):
                print("ERROR: (BadRequest) Destination endpoint not found.", file=sys.stderr)
                return 1
            topic = world["created_topic"]
            if not any(t["name"] == topic["name"] for t in world.setdefault("topics", [])):
                world["topics"].append(topic)
            world.setdefault("event_subscriptions", {})[topic["name"]] = list(world["subscription_names"])
        return 0
    print(f"fake azd: unsupported command {argv!r}", file=sys.stderr)
    return 2


def main(tool: str) -> int:
    world_file = Path(os.environ["FAKE_WORLD"])
    world = json.loads(world_file.read_text(encoding="utf-8"))
    argv = sys.argv[1:]
    world.setdefault("calls", []).append([tool, *argv])
    try:
        return _az(argv, world) if tool == "az" else _azd(argv, world)
    finally:
        world_file.write_text(json.dumps(world, indent=1), encoding="utf-8")
