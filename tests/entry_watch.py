"""Each adapter operation holding only what its entry in function_app/adapters/permissions.py lists.

:func:`watching` wraps the public methods of the adapter classes (the outermost one running on a thread is the
operation: a method calling another of the same facade counts as the outer one), and gives the fakes an identity
(:class:`ByEntry`) that holds what ``infra/`` assigns the app, at its scopes, but for each request only the actions
the running operation's entry lists. A request outside any operation (on a thread no operation started) is judged by
``infra/``'s roles alone and kept in ``outside``; an SDK poller's thread runs as the operation that started it
(:func:`follow_pollers`). What each operation asked is kept, so that a test can tell both
ways: an action the operation needed and its entry does not list (``beyond``), and one its entry lists that it did
not ask for (``asked``).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from function_app.adapters import permissions
from tests import rbac_model


class Watch:
    def __init__(self) -> None:
        self._local = threading.local()
        self.called: set[str] = set()
        self.asked: dict[str, set[str]] = {}  # operation -> the actions its requests were checked for
        self.beyond: list[tuple[str, str, str]] = []  # (operation, action, scope) granted by infra/, not listed
        self.ungranted: list[tuple[str, str, str]] = []  # (operation or "", action, scope) infra/ does not grant
        self.outside: list[tuple[str, str]] = []  # (action, scope) checked outside any operation

    def current(self) -> str | None:
        running: list[str] = getattr(self._local, "running", [])
        return running[0] if running else None

    @contextmanager
    def running(self, operation: str) -> Iterator[None]:
        stack = self._local.__dict__.setdefault("running", [])
        stack.append(operation)
        self.called.add(operation)
        try:
            yield
        finally:
            stack.pop()


@dataclass(frozen=True)
class ByEntry(rbac_model.Principal):
    """The app's identity as ``infra/`` assigns it, restricted per request to the running operation's entry."""

    watch: Watch = field(default_factory=Watch, compare=False)

    def allows(self, action: str, scope: str, *, data: bool = False) -> bool:
        granted = super().allows(action, scope, data=data)
        operation = self.watch.current()
        if operation is None:
            self.watch.outside.append((action, scope))
            if not granted:
                self.watch.ungranted.append(("", action, scope))
            return granted
        self.watch.asked.setdefault(operation, set()).add(action)
        listed = any(permissions.matches(a, action) for a in permissions.OPERATIONS[operation])
        if not granted:
            self.watch.ungranted.append((operation, action, scope))
        elif not listed:
            self.watch.beyond.append((operation, action, scope))
        return granted and listed


def wrap(monkeypatch: pytest.MonkeyPatch, watch: Watch, cls: type) -> None:
    """Every public method ``cls`` defines (or a class of the app it is made of) runs as its operation."""
    for part in cls.__mro__:
        if part is not cls and not part.__module__.startswith("function_app."):
            continue
        for name, member in vars(part).items():
            if name.startswith("_") or not inspect.isfunction(member) or (name in vars(cls) and part is not cls):
                continue
            monkeypatch.setattr(cls, name, _running(watch, f"{cls.__name__}.{name}", getattr(cls, name)))


def follow_pollers(monkeypatch: pytest.MonkeyPatch, watch: Watch) -> None:
    """An SDK poller's thread (azure-core's ``LROPoller``: its status polls and its final GET of the resource) runs
    as the operation that started it."""
    from azure.core.polling import LROPoller

    init, start = LROPoller.__init__, LROPoller._start

    def started_by(self: Any, *args: Any, **kwargs: Any) -> None:
        self._entry_operation = watch.current()  # before __init__ starts the thread
        init(self, *args, **kwargs)

    def polling(self: Any) -> Any:
        operation = getattr(self, "_entry_operation", None)
        if operation is None:
            return start(self)
        with watch.running(operation):
            return start(self)

    monkeypatch.setattr(LROPoller, "__init__", started_by)
    monkeypatch.setattr(LROPoller, "_start", polling)


def _running(watch: Watch, operation: str, method: Any) -> Any:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with watch.running(operation):
            return method(*args, **kwargs)

    return run


def by_entry(principal: rbac_model.Principal, watch: Watch) -> ByEntry:
    return ByEntry(principal.oid, principal.name, principal.grants, watch)
