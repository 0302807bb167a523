"""How Azure RBAC evaluates what an identity holds, for the fakes of the test world: a :class:`Grant`
(one role assignment: the role's actions at a scope), a :class:`Principal` (an identity and its grants),
ARM's 403 body when an action is missing, and the action and scope of an ARM request. What the
function app's identity holds is read from ``infra/`` by :mod:`tests.rbac`.

Azure's rules kept here (Azure RBAC docs, "Understand scope" and "Azure role definitions"): an
assignment applies to its scope and everything under it; ``*`` in an action matches any characters;
actions and data actions are separate (a data action is granted only by ``dataActions``);
``notActions`` subtract; names compare case-insensitively.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any


def under(scope: str, target: str) -> bool:
    """Whether ``target`` is ``scope`` or below it (path segments, case-insensitive)."""
    scope, target = scope.rstrip("/").lower(), target.rstrip("/").lower()
    return target == scope or target.startswith(scope + "/")


def _matches(granted: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), granted.lower())


@dataclass(frozen=True)
class Grant:
    """One role assignment: the role's permissions at ``scope``."""

    role: str
    scope: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    source: str = ""  # where in infra/ it comes from: "modules/x.bicep:resourceName"

    def allows(self, action: str, scope: str, *, data: bool = False) -> bool:
        if not under(self.scope, scope):
            return False
        if data:
            return any(_matches(a, action) for a in self.data_actions)
        return any(_matches(a, action) for a in self.actions) and not any(_matches(a, action) for a in self.not_actions)


@dataclass(frozen=True)
class Principal:
    """An identity (``oid``: the object id in its tokens) and the grants it holds."""

    oid: str
    name: str
    grants: tuple[Grant, ...] = ()

    def allows(self, action: str, scope: str, *, data: bool = False) -> bool:
        return any(g.allows(action, scope, data=data) for g in self.grants)

    def roles_at(self, scope: str) -> list[str]:
        return sorted({g.role for g in self.grants if under(g.scope, scope)})

    # Changes a test makes to see the failure it should cause.
    def without(self, action: str) -> Principal:
        """The same principal, with ``action`` removed from every role that lists it exactly."""
        low = action.lower()
        return replace(
            self,
            grants=tuple(
                replace(
                    g,
                    actions=tuple(a for a in g.actions if a.lower() != low),
                    data_actions=tuple(a for a in g.data_actions if a.lower() != low),
                )
                for g in self.grants
            ),
        )

    def moved(self, role: str, scope: str) -> Principal:
        """The same principal, with every assignment of ``role`` at ``scope`` instead."""
        assert any(g.role == role for g in self.grants), f"{self.name} holds no {role}"
        return replace(self, grants=tuple(replace(g, scope=scope) if g.role == role else g for g in self.grants))

    def dropping(self, role: str) -> Principal:
        """The same principal without its assignments of ``role``."""
        assert any(g.role == role for g in self.grants), f"{self.name} holds no {role}"
        return replace(self, grants=tuple(g for g in self.grants if g.role != role))

    def plus(self, *grants: Grant) -> Principal:
        return replace(self, grants=self.grants + grants)


def refusal(oid: str, action: str, scope: str) -> dict[str, Any]:
    """ARM's 403 body for a missing permission (the message Azure sends, ids filled in)."""
    return {
        "error": {
            "code": "AuthorizationFailed",
            "message": (
                f"The client '{oid}' with object id '{oid}' does not have authorization to perform action "
                f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, "
                "please refresh your credentials."
            ),
        }
    }


def arm_action(method: str, path: str) -> tuple[str, str]:
    """The Azure RBAC action and scope of an ARM request: ``GET .../workspaces/w/jobs/j`` is
    ``Microsoft.MachineLearningServices/workspaces/jobs/read`` at ``.../workspaces/w/jobs/j``; a POST to
    ``.../x/listKeys`` is ``.../x/listKeys/action`` at ``.../x``; a GET of a collection reads its type."""
    parts = [p for p in path.split("/") if p]
    low = [p.lower() for p in parts]
    assert "providers" in low, f"not a provider path: {path}"
    at = len(low) - 1 - low[::-1].index("providers")
    head, tail = parts[: at + 1], parts[at + 1 :]
    provider, rest = tail[0], tail[1:]
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method)
    if method == "POST":
        *rest, name = rest
        verb = f"{name}/action"
    types = rest[0::2]
    scope = "/" + "/".join([*head, provider, *rest])
    if len(rest) % 2 == 1:  # a collection: .../deployments
        scope = scope.rsplit("/", 1)[0]
    assert verb, f"no RBAC verb for {method}"
    return "/".join([provider, *types, verb]), scope
