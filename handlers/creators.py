"""Who created what an approval's decision comes from, as Azure ML records it, and whether that is who approves
it (four eyes: the author of a candidate run, of an upstream run, of the data asset version that started a
retrain, or of a data or model version a retrain's ``@latest`` input was pinned to, who also holds the approver
role). What a decision comes from is :func:`sources`: its own run or data
version, and, for a deploy of a run this service retrained, what started that retrain (found through the ledger,
as provenance is).

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

A data asset or model version has only its ``systemData`` (``Data.creation_context``, ``Model.creation_context``): ``createdBy`` is matched when it is
a principal name (a person's, ``createdByType`` User, as ARM's ``systemData`` names a person); a display name or an
application's client id is shown, never matched on (docs/security.md says which Azure ML writes is unverified).

A signed-in approver is known by its object id (lower case) and, when its name is a principal name (holds an
``@``), by that name without case; the command line's login name is neither, so a creator is never matched
against it. Stdlib and handlers' pure modules only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from handlers.approval_rules import retrain_behind, started_from
from handlers.errors import Forbidden
from handlers.freshness import ASSET_EVENT, NEW_ASSET_VERSION
from handlers.pins import DATA, MODEL, pinned_versions

if TYPE_CHECKING:
    from handlers.records import DecisionRecord

log = logging.getLogger(__name__)

NO_READER = "this backend reads no workspace (the dry-run backend)"
RUN = "run"  # DATA, MODEL: handlers.pins's
THINGS = {RUN: "run", DATA: "data asset version", MODEL: "model version"}


@dataclass(frozen=True)
class RunCreator:
    """Who created ``run`` (a run id; with ``of`` ``data`` or ``model``, a data asset or model version
    ``name:version``), as Azure ML records it; ``problem``: why it could not be read."""

    run: str
    object_id: str = ""
    upn: str = ""
    name: str = ""  # a full name, or an application's client id: shown, never matched on
    problem: str = ""
    of: str = RUN


@dataclass(frozen=True)
class Source:
    """What a decision comes from, whose author four eyes compare with the approver: a run (its id), a data
    asset or a model version (``name:version``); ``what``: how it led to the decision, for the record."""

    kind: str
    name: str
    what: str


@runtime_checkable
class Creators(Protocol):
    """Reads who created a run (the Azure ML backend, from run history), a data asset version or a model version."""

    def run_creator(self, run_id: str) -> RunCreator:
        """The creator of ``run_id``; ``problem`` set when the workspace would not say, or has no such run."""
        ...

    def data_creator(self, name: str, version: str) -> RunCreator:
        """The creator of data asset version ``name:version`` (``of`` data); ``problem`` as for a run."""
        ...

    def model_creator(self, name: str, version: str) -> RunCreator:
        """The creator of model version ``name:version`` (``of`` model); ``problem`` as for a run."""
        ...


def _own(record: DecisionRecord, whose: str) -> list[Source]:
    out = []
    run = started_from(record)
    if run is not None:
        what = "the candidate run" if record.action == "deploy" else "the upstream run"
        out.append(Source(RUN, run, f"{what} of {whose}"))
    trigger = record.trigger or {}
    event = str(trigger.get("event_id") or "")
    if record.action == "retrain" and trigger.get("event_type") == NEW_ASSET_VERSION and event.startswith(ASSET_EVENT):
        out.append(Source(DATA, event.removeprefix(ASSET_EVENT), f"the new data asset version that started {whose}"))
    if record.action == "retrain":  # the data and models it reads through @latest, pinned when it was carried out
        for name, kind, version in pinned_versions(record.details.get("rendered") or {}):
            out.append(Source(kind, version, f"the {kind} input {name!r} of {whose}, read as @latest and pinned"))
    return out


def sources(record: DecisionRecord, get_decision: Callable[[str], DecisionRecord | None]) -> list[Source]:
    """What ``record`` comes from: its candidate run (a deploy), its upstream run or new data asset version (a
    retrain), the data and model versions a retrain's ``@latest`` inputs were pinned to (:mod:`handlers.pins`); for a deploy
    of a run this service retrained, also what that retrain came from. Each once (the first way it led here)."""
    out = _own(record, "this decision")
    behind = retrain_behind(record, get_decision)
    out += _own(behind, f"the retrain decision {behind.id}, whose run this deploys") if behind else []
    once: dict[tuple[str, str], Source] = {}
    for source in out:
        once.setdefault((source.kind, source.name), source)
    return list(once.values())


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
    """Whether ``approver`` created the run or data version (True: four eyes refuse it), and what the approval
    records of the check: ``compared`` (the kinds of form compared, none equal) or ``not_compared`` (why the
    creator could not be matched: nothing reliable was recorded or read, or the approver is known by no such
    form)."""
    thing = THINGS.get(creator.of, creator.of)
    seen = {creator.of: creator.run[:200]} | ({"created_by": creator.name[:200]} if creator.name else {})
    if creator.problem:
        return False, {**seen, "not_compared": f"the {thing}'s creator could not be read: {creator.problem}"[:500]}
    theirs, mine = _forms(creator.object_id, creator.upn), approver_forms(approver)
    if not theirs:
        why = f"Azure ML recorded no object id or principal name for the {thing}'s creator"
        return False, {**seen, "not_compared": why}
    if not mine:
        why = "the approver is known by no object id or principal name (a function key or the command line's login)"
        return False, {**seen, "not_compared": why}
    if theirs & mine:
        return True, {**seen, "matched": sorted(theirs & mine)[0]}
    kinds = {f.rsplit(" ", 1)[0] for f in theirs} & {f.rsplit(" ", 1)[0] for f in mine}
    if not kinds:
        return False, {**seen, "not_compared": f"the {thing}'s creator and the approver are known by no form in common"}
    return False, {**seen, "compared": ", ".join(sorted(kinds))}


def _read(creators: Creators | None, source: Source) -> RunCreator:
    if creators is None:
        return RunCreator(source.name, problem=NO_READER, of=source.kind)
    if source.kind in (DATA, MODEL):
        name, _, version = source.name.rpartition(":")
        read = creators.model_creator if source.kind == MODEL else creators.data_creator
        return read(name, version)
    return creators.run_creator(source.name)


def refuse_creators(
    creators: Creators | None, found: list[Source], caller: Mapping[str, Any], named: str, refused: str
) -> list[dict[str, Any]]:
    """Forbidden when ``caller`` (``named``) created any of ``found``: four eyes, for an approval or a promotion of
    what they start; ``refused`` ends the message (what it comes to, and the key). What was compared otherwise, one
    entry each (the decision's record keeps them), a warning logged for each creator that could not be matched."""
    checks = []
    for source in found:
        created, checked = creator_check(_read(creators, source), caller)
        thing = THINGS.get(source.kind, source.kind)
        if created:
            raise Forbidden(
                f"{named} created {thing} {source.name}, {source.what} (Azure ML records its creator by "
                f"{checked['matched']}), {refused}; another operator does"
            )
        if "not_compared" in checked:
            log.warning(
                "the creator of %s %s was not matched with %s: %s", thing, source.name, named, checked["not_compared"]
            )
        checks.append({**checked, "as": source.what})
    return checks
