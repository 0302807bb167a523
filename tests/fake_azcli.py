"""Fake ``az`` and ``azd`` for the hook tests: one Python script, put first on PATH under both names.

Each call is appended to the world file's ``calls`` and answered from its state, the way the real
tools and Azure behave (as the project's notes of Azure's documented behaviour say), not the way the hooks expect:
- a command without ``--subscription`` (or ``--ids``) acts on the signed-in account's default
  subscription (``account_subscription``), which need not be the workspace's (``subscription``) or
  the app's (``app_subscription``): what lives elsewhere is not found there;
- ``az resource show`` answers the workspace by name or ``--ids`` and applies a dotted ``--query``
  (``properties.publicNetworkAccess``) as az's JMESPath would, printing ``-o tsv``;
- ``az provider show/register`` keep ``providers`` (namespace -> registrationState, default
  Registered); ``az eventgrid system-topic list`` fails with MissingSubscriptionRegistration while
  Microsoft.EventGrid is not registered in that subscription, and otherwise returns every topic of
  the workspace's subscription, whatever its source;
- ``az identity show --ids`` succeeds for ``identities``, answers AuthorizationFailed for
  ``unreadable_identities`` and ResourceNotFound for any other (a deleted identity);
- ``az functionapp function show`` fails until the function is indexed (``index_after`` shows);
- ``azd provision`` PUTs the system topic as infra/modules/events.bicep does (tests/test_infra_events.py
  pins that): the user-assigned identities of RETRAIN_SYSTEM_TOPIC_STATE exactly, plus the
  system-assigned one, and refuses as ARM does a PUT naming an identity that does not exist or
  more than two user-assigned identities (Event Grid's limit for system topics). With
  RETRAIN_EVENT_SUBSCRIPTIONS=true it creates the subscriptions, only if the function is indexed,
  and otherwise fails as Event Grid does ("Destination endpoint not found");
- ``azd env set`` writes the azd environment (``env``), which the tests read back.

The world file is JSON; :func:`install` writes the scripts and returns the PATH to use.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

MAX_USER_ASSIGNED = 2


def install(bin_dir: Path, world_file: Path) -> dict[str, str]:
    """Write ``az`` and ``azd`` into ``bin_dir``; return the environment variables that select them.
    The scripts run Python without ``site`` (-S): this module needs only the standard library, and a
    hook calls the tools a dozen times (site's work was a third of each call, about 30 ms)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("az", "azd"):
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
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


def _subscription(argv: list[str], world: dict[str, Any]) -> str:
    """The subscription a command acts on: --subscription, else the account's default."""
    return _option(argv, "--subscription") or world.get("account_subscription") or world["subscription"]


def _print_query(value: Any, argv: list[str]) -> None:
    """``--query a.b.c`` (a dotted path: all the hooks use) with ``-o tsv`` or json."""
    for part in (_option(argv, "--query") or "").split("."):
        if part:
            value = value.get(part) if isinstance(value, dict) else None
    if _option(argv, "-o") == "tsv":
        print("" if value is None else value)
    else:
        print(json.dumps(value))


def _not_found(what: str) -> int:
    print(f"ERROR: (ResourceNotFound) The Resource '{what}' was not found.", file=sys.stderr)
    return 3


def _az(argv: list[str], world: dict[str, Any]) -> int:
    command = " ".join(a for a in argv if not a.startswith("-"))[:60]
    subscription = _subscription(argv, world)
    ml_subscription = world["subscription"]
    providers = world.setdefault("providers", {})
    if argv[:2] == ["account", "show"]:
        print(world.get("account_subscription") or world["subscription"])
        return 0
    if argv[:2] == ["resource", "show"]:
        workspace = world["workspace"]
        ids = _option(argv, "--ids")
        if ids is not None:
            found = ids.lower() == workspace["id"].lower()
        else:
            found = (
                subscription == ml_subscription
                and _option(argv, "-n") == workspace["name"]
                and _option(argv, "-g") == workspace["resourceGroup"]
            )
        if not found:
            return _not_found(ids or _option(argv, "-n") or "")
        _print_query(workspace, argv)
        return 0
    if argv[:2] == ["provider", "show"]:
        _print_query({"registrationState": providers.get(_option(argv, "--namespace") or "", "Registered")}, argv)
        return 0
    if argv[:2] == ["provider", "register"]:
        if world.get("register_fails"):
            print(
                "ERROR: (AuthorizationFailed) The client does not have authorization to perform action "
                f"'{_option(argv, '--namespace')}/register/action' over scope '/subscriptions/{subscription}'",
                file=sys.stderr,
            )
            return 1
        providers[_option(argv, "--namespace") or ""] = "Registered"
        return 0
    if argv[:2] == ["identity", "show"]:
        identity = _option(argv, "--ids") or ""
        if identity.lower() in {i.lower() for i in world.get("unreadable_identities", [])}:
            print(f"ERROR: (AuthorizationFailed) no authorization to read '{identity}'", file=sys.stderr)
            return 1
        if identity.lower() not in {i.lower() for i in world.get("identities", [])}:
            return _not_found(identity)
        print(identity)
        return 0
    if argv[:3] == ["eventgrid", "system-topic", "list"]:
        if providers.get("Microsoft.EventGrid", "Registered") != "Registered":
            print(
                f"ERROR: (MissingSubscriptionRegistration) The subscription '{subscription}' is not registered "
                "to use namespace 'Microsoft.EventGrid'.",
                file=sys.stderr,
            )
            return 1
        print(json.dumps(world.get("topics", []) if subscription == ml_subscription else []))
        return 0
    if argv[:4] == ["eventgrid", "system-topic", "event-subscription", "list"]:
        topic = _option(argv, "--system-topic-name")
        if subscription != ml_subscription or not any(t["name"] == topic for t in world.get("topics", [])):
            return _not_found(f"systemTopics/{topic}")
        print("\n".join(world.get("event_subscriptions", {}).get(topic, [])))
        return 0
    if argv[:3] == ["functionapp", "function", "show"]:
        world["show_calls"] = world.get("show_calls", 0) + 1
        if subscription != world.get("app_subscription", ml_subscription):
            return _not_found(f"sites/{_option(argv, '-n')}")
        if _indexed(world, _option(argv, "--function-name") or ""):
            print(_option(argv, "--function-name"))
            return 0
        print("(NotFound) Error retrieving function.", file=sys.stderr)
        return 3
    print(f"fake az: unsupported command {command!r}", file=sys.stderr)
    return 2


def _put_topic(world: dict[str, Any], env: dict[str, str]) -> str | None:
    """The system topic as events.bicep PUTs it; the ARM error when Azure would refuse the PUT."""
    created = world["created_topic"]
    name = env.get("RETRAIN_SYSTEM_TOPIC_NAME") or created["name"]
    encoded = env.get("RETRAIN_SYSTEM_TOPIC_STATE") or ""
    state = json.loads(base64.b64decode(encoded)) if encoded else {"userAssignedIdentities": {}, "tags": {}}
    user_assigned = dict(state["userAssignedIdentities"])
    existing = {i.lower() for i in world.get("identities", [])}
    for key in user_assigned:
        if key.lower() not in existing:
            return (
                f"ERROR: (BadRequest) Resource '{key}' was not found: the user-assigned identity of the system "
                f"topic {name} does not exist."
            )
    if len(user_assigned) > MAX_USER_ASSIGNED:
        return f"ERROR: (BadRequest) A system topic can have at most {MAX_USER_ASSIGNED} user-assigned identities."
    identity: dict[str, Any] = {"type": "SystemAssigned", "principalId": "topic-system-principal"}
    if user_assigned:
        identity.update(type="SystemAssigned, UserAssigned", userAssignedIdentities=user_assigned)
    topics = world.setdefault("topics", [])
    topic = next((t for t in topics if t["name"] == name), None)
    if topic is None:
        topic = {**created, "name": name}
        topics.append(topic)
    topic["identity"] = identity
    world.setdefault("topic_puts", []).append({"name": name, "identity": identity})
    return None


def _azd(argv: list[str], world: dict[str, Any]) -> int:
    env = world.setdefault("env", {})
    if argv[:2] == ["env", "set"] and len(argv) == 4:
        env[argv[2]] = argv[3]
        return 0
    if argv[:1] == ["provision"]:
        if world.get("provision_fails"):
            print("ERROR: deployment failed: (Conflict) another operation is in progress", file=sys.stderr)
            return 1
        refused = _put_topic(world, env)
        if refused:
            print(refused, file=sys.stderr)
            return 1
        if env.get("RETRAIN_EVENT_SUBSCRIPTIONS") == "true":
            if "on_workspace_event" not in world.get("functions", []):
                print("ERROR: (BadRequest) Destination endpoint not found.", file=sys.stderr)
                return 1
            topic = env.get("RETRAIN_SYSTEM_TOPIC_NAME") or world["created_topic"]["name"]
            world.setdefault("event_subscriptions", {})[topic] = list(world["subscription_names"])
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
