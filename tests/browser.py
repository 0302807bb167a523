"""A real browser for the console's tests: Debian's Chromium, driven by Playwright.

Playwright's own browser download cannot reach its host here, so the tests use the distribution's
``chromium`` package, installed by :func:`chromium` where it is missing (as root, with apt-get, as CI
runs), and launched with ``--no-sandbox`` (the tests run as root).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


def chromium() -> str:
    """The path of Chromium, installing Debian's package first when it is missing."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            "the console tests need Debian's chromium: run `apt-get update && apt-get install -y chromium` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # pytest-xdist workers may both get here: one installs, the other waits for it (apt has one lock)
    with open("/tmp/retrain-tests-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(CHROMIUM):
            return CHROMIUM
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return CHROMIUM


# One Chromium for the console tests of a module in a test process, launched by the first and closed
# after the last (conftest.py, pytest_runtest_teardown): launching it was about a second of each console
# test; each test still gets a fresh browser context (its own cookies, storage, cache and headers, as a
# new incognito window)
_shared: dict[str, Any] = {}


def _browser() -> Any:
    if "browser" not in _shared:
        from playwright.sync_api import sync_playwright

        path = chromium()
        _shared["playwright"] = sync_playwright().start()
        _shared["browser"] = _shared["playwright"].chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
    return _shared["browser"]


def close_browser() -> None:
    """Close the test process's Chromium, if a test launched it."""
    if "browser" in _shared:
        try:
            _shared.pop("browser").close()
        finally:
            _shared.pop("playwright").stop()


@contextmanager
def browser_page(
    width: int = 1366, height: int = 900, answer: str | None = None, headers: dict[str, str] | None = None
) -> Iterator[Any]:
    """A page in a fresh context of headless Chromium at a laptop's screen size; confirmation dialogs are
    accepted, and prompts answered with ``answer`` (by default the text they offer). ``headers`` go with
    every request the page sends (what App Service adds for a signed-in person, say)."""
    context = _browser().new_context(viewport={"width": width, "height": height}, extra_http_headers=headers)
    try:
        page = context.new_page()
        page.on(
            "dialog",
            lambda dialog: (
                dialog.accept(dialog.default_value if answer is None else answer)
                if dialog.type == "prompt"
                else dialog.accept()
            ),
        )
        yield page
    finally:
        context.close()
