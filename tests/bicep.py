"""The Bicep files of ``infra/``, read with pycep (the parser checkov uses) once per test process.

Building a ``BicepParser`` compiles its grammar (about 0.25 s); parsing a file with a built one takes
about 15 ms. So one parser serves every file, and each file is parsed once, whichever test asks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from typing import Any, cast

from tests.conftest import REPO

INFRA = REPO / "infra"


@cache
def _parser() -> Any:
    from pycep import BicepParser

    return BicepParser()


@cache
def bicep(relative: str) -> dict[str, Any]:
    """The parsed file at ``relative`` (to ``infra/``); the same object to every caller: do not change it."""
    return cast("dict[str, Any]", _parser().parse(text=(INFRA / relative).read_text(encoding="utf-8")))


def variable(relative: str, name: str) -> Any:
    return bicep(relative)["variables"][name]["value"]


def modules(relative: str = "main.bicep") -> dict[str, dict[str, Any]]:
    """Each module's configuration (a conditional module's own, under its condition)."""
    found = {}
    for name, module in bicep(relative)["modules"].items():
        config = module["config"]
        found[name] = config["config"] if "condition" in config else config
    return found


@cache
def app_functions() -> dict[str, list[dict[str, Any]]]:
    """The app's functions and their bindings, found the way the worker finds them: import main, in a fresh
    interpreter from the repo root (FunctionApp.get_functions() may run only once per app, and other tests, the
    local host, have already run it in this process)."""
    code = (
        "import importlib, json\n"
        "main = importlib.import_module('main')\n"
        "print(json.dumps({f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()]\n"
        "    for f in main.app.get_functions()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return cast(dict[str, list[dict[str, Any]]], json.loads(done.stdout))
