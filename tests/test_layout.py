"""The layout rules of STYLE.md, and the app indexed the way the Functions worker indexes it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import azure.functions as func
from azure.functions.decorators.function_app import FunctionRegister

from tests.conftest import REPO


@cache
def parsed(path: Path) -> ast.Module:
    """A source file's syntax tree, parsed once for the tests of this module that walk the same files."""
    return ast.parse(path.read_text(encoding="utf-8"))


def test_handlers_import_nothing_from_azure_or_function_app() -> None:
    offenders = []
    for path in (REPO / "handlers").rglob("*.py"):
        for node in ast.walk(parsed(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("azure", "function_app")]
    assert offenders == []


def import_graph(*packages: str) -> dict[str, set[str]]:
    """Which of our modules (in ``packages``) each one imports: at the top, under TYPE_CHECKING and
    inside functions, so that an import moved into a function cannot hide a circle. ``from pkg import
    name`` counts as importing the module ``pkg.name`` when there is one, else ``pkg``."""
    ours = set(packages)

    def module_of(dotted: str) -> str | None:
        path = REPO.joinpath(*dotted.split("."))
        if path.with_suffix(".py").is_file():
            return dotted
        if (path / "__init__.py").is_file():
            return dotted
        return None

    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            edges = graph.setdefault(name, set())
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.Import):
                    edges.update(a.name for a in node.names if a.name.split(".")[0] in ours)
                elif isinstance(node, ast.ImportFrom) and node.level:
                    raise AssertionError(f"{path}: relative import; the house style imports absolutely")
                elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
                    for alias in node.names:
                        edges.add(module_of(f"{node.module}.{alias.name}") or node.module)
            edges.discard(name)
    return graph


def handlers_import_graph() -> dict[str, set[str]]:
    """Which ``handlers`` modules each one imports: at the top, under TYPE_CHECKING and inside functions."""
    return {
        name: {e for e in edges if e.startswith("handlers.")}
        for name, edges in import_graph("handlers").items()
        if name != "handlers"
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once, as the path that closes it. The walk follows only edges between
    modules that reach each other (a circle has no other edge), not every path (9 s for the project)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    reach = {node: reachable(graph, node) for node in graph}

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if node not in reach.get(nxt, ()):  # no way back from nxt: no circle goes through this edge
                continue
            if nxt in path:
                loop = [*path[path.index(nxt) :], nxt]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append(loop)
            elif len(path) < len(graph):
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or not (itself only through a circle)."""
    found: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(graph.get(node, ()))
    return found


def test_the_cycle_finder_finds_a_circle_through_three_modules() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # a circle reached only through modules outside it is still found, once
    assert cycles({"x": {"a"}, "a": {"b", "y"}, "b": {"a"}, "y": {"z"}, "z": set()}) == [["a", "b", "a"]]


def test_no_import_circle_among_handlers_modules_type_checking_and_local_imports_included() -> None:
    graph = handlers_import_graph()
    assert {"handlers.service", "handlers.reconcile", "handlers.rollout.stepper", "handlers.executor"} <= set(graph)
    assert cycles(graph) == []


def test_no_import_circle_anywhere_in_the_project_function_app_included() -> None:
    graph = import_graph("handlers", "function_app")
    assert {
        "function_app.runtime",
        "function_app.retry",
        "function_app.delivery",
        "function_app.adapters.azureml",
    } <= set(graph)
    assert "function_app.deadline" in graph["function_app.retry"]  # the edge that used to close the circle
    assert cycles(graph) == []


def test_the_deadline_module_needs_only_the_standard_library() -> None:
    tree = ast.parse((REPO / "function_app" / "deadline.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


# What the triggers and the command line may import of ours: the application's API (handlers.retrainer),
# how the worker gets it and its settings, the delivery frame, telemetry, the triggers' own helpers, the
# errors they answer; the command line also starts the local host (retrain host).
ENTRY_POINTS_MAY_IMPORT = {
    "handlers.retrainer",
    "handlers.errors",
    "function_app.runtime",
    "function_app.settings",
    "function_app.delivery",
    "function_app.telemetry",
    "function_app.triggers.replies",
    "function_app.triggers.callers",
    "function_app",  # the package itself (from function_app import telemetry)
    "function_app.triggers",
}
TRIGGER_HELPERS = {"function_app.triggers.replies", "function_app.triggers.callers", "function_app.triggers"}


def entry_point_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """What each trigger module and the command line import of ours beyond what they may."""
    entries = {n for n in graph if n.startswith("function_app.triggers.") and n not in TRIGGER_HELPERS}
    commands = {n for n in graph if n == "function_app.cli" or n.startswith("function_app.cli.")}
    allowed = {
        name: ENTRY_POINTS_MAY_IMPORT
        | ({"function_app.localhost", *commands} if name.startswith("function_app.cli") else set())
        for name in [*entries, *commands, "function_app.cli"]
    }
    return {name: extra for name in allowed if (extra := graph.get(name, set()) - allowed[name])}


def test_the_triggers_and_the_command_line_reach_the_inside_only_through_the_retrainer_api() -> None:
    """parse -> call -> reply: a trigger or a command that imports handlers.service, the executor, the
    ledger adapters... works around the application's API (handlers.retrainer) and can disagree with it."""
    graph = import_graph("handlers", "function_app")
    assert len([n for n in graph if n.startswith("function_app.triggers.")]) >= 5  # the check sees them
    assert entry_point_imports(graph) == {}


def test_the_entry_point_check_names_what_a_trigger_or_the_cli_reaches_around_the_api() -> None:
    """import_graph counts imports inside functions and under TYPE_CHECKING (the circle tests check that)."""
    graph = {
        "function_app.cli": {"handlers.retrainer", "function_app.localhost", "handlers.executor"},
        "function_app.triggers.api": {"handlers.retrainer", "handlers.service"},
        "function_app.triggers.events": {"handlers.retrainer", "function_app.localhost"},
        "function_app.triggers.replies": {"handlers.jsonin"},
    }
    assert entry_point_imports(graph) == {
        "function_app.cli": {"handlers.executor"},
        "function_app.triggers.api": {"handlers.service"},
        "function_app.triggers.events": {"function_app.localhost"},
    }


def test_the_reconciler_and_the_stepper_never_receive_the_service() -> None:
    graph = handlers_import_graph()
    assert (
        "handlers.service"
        not in graph["handlers.reconcile"] | graph["handlers.rollout.stepper"] | graph["handlers.executor"]
    )


def test_rollout_progress_is_read_from_its_flight_in_one_place() -> None:
    """Only :class:`handlers.rollout.progress.RolloutProgress` reads or writes a flight's
    ``data["rollout"]``, and only it knows the keys that exist there alone; everything else reads
    its typed fields."""
    offenders = []
    paths = [
        *(REPO / "handlers").rglob("*.py"),
        *(REPO / "function_app").rglob("*.py"),
        *(REPO / "bench").rglob("*.py"),
    ]
    for path in [*paths, REPO / "main.py"]:
        if path == REPO / "handlers" / "rollout" / "progress.py":
            continue
        for node in ast.walk(parsed(path)):
            key: ast.expr | None = None
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "data":
                key = node.slice
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "data"
                and node.args
            ):
                key = node.args[0]
            if (isinstance(key, ast.Constant) and key.value == "rollout") or (
                isinstance(key, ast.Name) and key.id == "ROLLOUT"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: reads a flight's rollout data")
            if isinstance(node, ast.Constant) and node.value in ("step_started", "restores_kept"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert offenders == []


# what changes Azure or writes a decision record, through the ports
EFFECTS = frozenset(
    {"submit_retrain", "start_deploy", "set_traffic", "retarget_monitor", "delete_deployment", "put_decision", "score"}
)


def test_only_the_executor_carries_out_effects_the_stepper_operator_and_reconciler_decide() -> None:
    """Every call that submits, deploys, sets traffic, moves a monitor, deletes a deployment or
    writes a decision record is the executor's (``handlers/executor.py``, its steps before acting,
    ``handlers/acts.py``, a base of the Executor class, and the rollout effects it carries out through,
    ``handlers/rollout/effects.py``)."""
    executor = {REPO / "handlers" / "executor.py", REPO / "handlers" / "rollout" / "effects.py"}
    executor.add(REPO / "handlers" / "acts.py")
    executor.add(REPO / "handlers" / "routing.py")  # the port's router: passes the executor's calls on, by endpoint
    offenders = []
    for path in (REPO / "handlers").rglob("*.py"):
        if path in executor:
            continue
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EFFECTS:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.func.attr}")
    assert offenders == []


def _index_like_the_worker() -> tuple[list[str], dict[str, list[dict[str, object]]]]:
    """Import the root script by its stem from the repo root, in a fresh interpreter, as the worker does."""
    code = (
        "import importlib, json, sys\n"
        "from azure.functions.decorators.function_app import FunctionRegister\n"
        "m = importlib.import_module('main')\n"
        "apps = [k for k, v in vars(m).items() if isinstance(v, FunctionRegister)]\n"
        "fns = {f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()] for f in getattr(m, apps[0]).get_functions()} if len(apps) == 1 else {}\n"
        "print(json.dumps([apps, fns]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    apps, fns = json.loads(out.stdout)
    return apps, fns


def test_root_script_holds_exactly_one_function_app_and_its_functions() -> None:
    settings = json.loads((REPO / "local.settings.json.example").read_text())["Values"]
    assert settings["PYTHON_SCRIPT_FILE_NAME"] == "main.py"
    apps, functions = _index_like_the_worker()
    assert apps == ["app"]
    triggers = {name: next(b for b in bindings if b["direction"] == "IN") for name, bindings in functions.items()}
    assert triggers["on_workspace_event"]["type"] == "eventGridTrigger"
    assert triggers["reconcile"] == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%RETRAIN_RECONCILE_SCHEDULE%",  # an app setting, which SETTINGS, infra and local settings carry
        "runOnStartup": False,
        "useMonitor": True,
    }
    routes = {
        t.get("route"): (sorted(t["methods"]), t["authLevel"]) for t in triggers.values() if t["type"] == "httpTrigger"
    }
    assert routes == {
        "events": (["OPTIONS", "POST"], "FUNCTION"),
        "alerts": (["POST"], "FUNCTION"),
        "models/{model}/retrain": (["POST"], "FUNCTION"),
        "models/{model}/deploy": (["POST"], "FUNCTION"),
        "models/{model}/rollback": (["POST"], "FUNCTION"),
        "models/{model}/promote": (["POST"], "FUNCTION"),
        "models/{model}/pause": (["POST"], "FUNCTION"),
        "models/{model}/resume": (["POST"], "FUNCTION"),
        "freeze": (["POST"], "FUNCTION"),  # the stop switch: behind a key like every operator route
        "unfreeze": (["POST"], "FUNCTION"),
        "decisions/{id}/approve": (["POST"], "FUNCTION"),  # a pending deploy approved or rejected
        "decisions/{id}/reject": (["POST"], "FUNCTION"),
        "models": (["GET"], "FUNCTION"),
        "decisions": (["GET"], "FUNCTION"),
        "health": (["GET"], "ANONYMOUS"),
        "config": (["GET"], "FUNCTION"),
        "console": (["GET"], "FUNCTION"),
    }


def test_blueprints_are_not_visible_to_the_worker_as_a_second_app() -> None:
    import main

    registers = [v for v in vars(main).values() if isinstance(v, FunctionRegister)]
    assert len(registers) == 1 and isinstance(registers[0], func.FunctionApp)


def test_importing_the_root_script_loads_no_sdk_pydantic_or_policy() -> None:
    code = (
        "import sys, main\n"
        "heavy = [m for m in ('azure.ai.ml', 'azure.monitor.query', 'azure.monitor.querymetrics', 'azure.data.tables', 'azure.identity', 'pydantic', 'yaml', 'handlers.policy', 'handlers.operate', 'handlers.rollout.stepper', 'handlers.executor') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_host_json_declares_the_event_grid_bundle_and_the_api_prefix_the_local_host_serves() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"  # eventGridTrigger lives there
    from function_app.localhost import ROUTE_PREFIX

    assert host["extensions"]["http"]["routePrefix"] == ROUTE_PREFIX == "api"


VULTURE_ALLOWED = REPO / "tests" / "data" / "vulture-allowed.txt"


def test_no_dead_code_in_the_service_vulture_says_so() -> None:
    """Code nothing calls costs every reader: vulture finds what no module of the service, bench or
    scripts uses; the names used from outside (decorators, frameworks, tests) are listed with why."""
    allowed = {
        line.strip() for line in VULTURE_ALLOWED.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    paths = ["handlers", "function_app", "bench", "scripts", "main.py"]
    out = subprocess.run(
        [sys.executable, "-m", "vulture", "--min-confidence", "60", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode in (0, 3), out.stderr  # 3: vulture found something
    found: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        where, _, rest = line.partition(": unused ")
        name = rest.split("'")[1] if "'" in rest else rest
        found.setdefault(name, []).append(where)
    dead = {name: places for name, places in found.items() if name not in allowed}
    assert not dead, f"unused (remove it, or list it in {VULTURE_ALLOWED.name} with why): {dead}"
    assert not allowed - set(found), f"listed in {VULTURE_ALLOWED.name} but no longer reported: {allowed - set(found)}"


# Issue 22: "no source file over about 400 lines"; a file that grows past this is split along what it does.
MOST_LINES = 420


def test_no_source_file_is_over_about_400_lines() -> None:
    """A file with several reasons to change costs every reader: the service, its benchmarks and scripts,
    the console's script and the tests are split before they grow past about 400 lines."""
    folders = ["handlers", "function_app", "bench", "scripts", "tests"]
    files = [p for folder in folders for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".js")]
    assert len(files) > 100  # the walk found the project
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MOST_LINES}
    assert not long, f"over {MOST_LINES} lines (split it along what it does): {long}"


def test_no_test_module_imports_another() -> None:
    """STYLE.md: test modules do not import each other; what two of them share lives in tests/builders.py,
    tests/world.py, tests/rollouts.py and the other helper modules."""
    found = {}
    for path in (REPO / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(n.startswith("tests.test_") for n in names):
                found.setdefault(path.name, []).append(node.lineno)
    assert not found, f"test modules importing another (move what they share to a helper module): {found}"
