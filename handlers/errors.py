"""The service's error tree.

``PermanentError``: the input or the configuration is wrong, and trying again will not help.
The decision is recorded as failed and the event acknowledged.

``TransientError``: a dependency is unavailable for now (throttling, timeout, 5xx, storage down).
It is raised out of the trigger so that Event Grid redelivers the event.

``InvalidInput``: a caller sent something malformed; the HTTP routes answer 4xx with its message.
``PolicyError``: the policy file is invalid; it names the file, the key path and the fix.
"""

from __future__ import annotations


class RetrainError(Exception):
    """Base of every error the service raises on purpose."""


class PermanentError(RetrainError):
    """Acknowledge and record: retrying cannot succeed."""


class TransientError(RetrainError):
    """Raise for redelivery: the same call may succeed later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidInput(PermanentError):
    """A request or event body that cannot be understood; says what was wrong and how to fix it."""


class NotFound(PermanentError):
    """A named thing (model, decision) that the policy or the ledger does not know."""


class Conflict(PermanentError):
    """The request is valid but the model's state refuses it (cooldown, in flight). ``hint``: what
    the caller can do about it."""

    hint = 'wait for the cooldown or the work in flight, or send "force": true if allowed'


class NotApplicable(Conflict):
    """An operator's action that does not apply to the rollout as it is (nothing to promote, already
    paused, not paused, nothing to roll back to)."""

    hint = "GET /api/models shows each model's rollout in flight; GET /api/decisions what happened to it"


class KeyReused(PermanentError):
    """An Idempotency-Key sent again with another request than the one it was first used for."""


class Unauthorized(PermanentError):
    """The caller is not signed in (or its sign-in cannot be read), where sign-in is required."""


class Forbidden(PermanentError):
    """The caller may not do this (for example force without RETRAIN_ALLOW_FORCE)."""


class PolicyError(PermanentError):
    """The policy file is invalid. ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))
