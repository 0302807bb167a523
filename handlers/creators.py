"""Who created a run, as Azure ML records it, and whether that is who approves what the run starts (four eyes:
the author of a candidate run, or of an upstream run, who also holds the approver role).

Azure ML records a run's creator in three places, not all of them reliable:

- the job's ``systemData.createdBy`` (the SDK's ``Job.creation_context.created_by``): for a person, their display
  name (``az ml job create`` prints ``"created_by": "<full name>"``, ``created_by_type: User``; Az PowerShell's
  ``Get-AzMLWorkspaceJob`` shows the same), for an application its client id. A display name is no identity (two
  people may share one, and no caller's headers carry it): shown, never matched on;
- run history's ``createdBy`` (``/history/v1.0/.../runs/<id>``; the REST client's ``User``): ``userObjectId``
  (the object id of the token that created the run), ``upn`` (a person's principal name) and ``userName`` (a full
  name, or an application's client id). The object id and the principal name come from the token: matched on;
- MLflow's ``mlflow.user`` tag and ``RunInfo.user_id``: written by whatever client logs the run (the tag is a tag
  like any other; ``user_id`` is what the client sends to ``runs/create``): never matched on.

A signed-in approver is known by its object id (lower case) and, when its name is a principal name (holds an
``@``), by that name without case; the command line's login name is neither, so a creator is never matched
against it. Stdlib and handlers.errors only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from handlers.errors import Forbidden

log = logging.getLogger(__name__)

NO_READER = "this backend reads no workspace (the dry-run backend)"


@dataclass(frozen=True)
class RunCreator:
    """Who created run ``run``, as run history records it; ``problem``: why it could not be read."""

    run: str
    object_id: str = ""
    upn: str = ""
    name: str = ""  # a full name, or an application's client id: shown, never matched on
    problem: str = ""


@runtime_checkable
class Creators(Protocol):
    """Reads who created a run (the Azure ML backend, from run history)."""

    def run_creator(self, run_id: str) -> RunCreator:
        """The creator of ``run_id``; ``problem`` set when the workspace would not say, or has no such run."""
        ...


def _forms(object_id: str, principal_name: str) -> set[str]:
    oid, upn = object_id.strip().lower(), principal_name.strip().casefold()
    return ({f"object id {oid}"} if oid else set()) | ({f"principal name {upn}"} if "@" in upn else set())


def approver_forms(caller: Mapping[str, Any]) -> set[str]:
    """The forms a caller is known by that a creator can be matched against: a signed-in principal's object id,
    and its name when that is a principal name; none for anyone else (a function key, the command line)."""
    if caller.get("kind") != "principal":
        return set()
    return _forms(str(caller.get("id") or ""), str(caller.get("name") or ""))


def creator_check(creator: RunCreator, approver: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether ``approver`` created the run (True: four eyes refuse it), and what the approval records of the
    check: ``compared`` (the kinds of form compared, none equal) or ``not_compared`` (why the creator could not be
    matched: nothing reliable was recorded or read, or the approver is known by no such form)."""
    seen: dict[str, Any] = {"run": creator.run[:200]} | ({"created_by": creator.name[:200]} if creator.name else {})
    if creator.problem:
        return False, {**seen, "not_compared": f"the run's creator could not be read: {creator.problem}"[:500]}
    theirs, mine = _forms(creator.object_id, creator.upn), approver_forms(approver)
    if not theirs:
        return False, {**seen, "not_compared": "Azure ML recorded no object id or principal name for the run's creator"}
    if not mine:
        why = "the approver is known by no object id or principal name (a function key or the command line's login)"
        return False, {**seen, "not_compared": why}
    if theirs & mine:
        return True, {**seen, "matched": sorted(theirs & mine)[0]}
    kinds = {f.rsplit(" ", 1)[0] for f in theirs} & {f.rsplit(" ", 1)[0] for f in mine}
    if not kinds:
        return False, {**seen, "not_compared": "the run's creator and the approver are known by no form in common"}
    return False, {**seen, "compared": ", ".join(sorted(kinds))}


def refuse_creator(
    creators: Creators | None, run: str, caller: Mapping[str, Any], named: str, refused: str
) -> dict[str, Any]:
    """Forbidden when ``caller`` (``named``) created ``run``: four eyes, for an approval or a promotion of what the run
    starts; ``refused`` ends the message (what it comes to, and the key). What was compared otherwise (the approval's
    record keeps it), a warning logged when the creator could not be matched."""
    creator = creators.run_creator(run) if creators is not None else RunCreator(run, problem=NO_READER)
    created, checked = creator_check(creator, caller)
    if created:
        raise Forbidden(
            f"{named} created run {run} (Azure ML records its creator by {checked['matched']}), {refused}; another "
            "operator does"
        )
    if "not_compared" in checked:
        log.warning("the creator of run %s was not matched with %s: %s", run, named, checked["not_compared"])
    return checked
