"""Whether an operator's transition may take the place of the one pending (pure rules, no I/O).

An operator's rollback, promote, pause or resume is written ahead into the rollout's flight like any
transition (:mod:`handlers.operate`); a transition already pending is carried out first, and the operator
is told to try again. One pending transition is different: a ``smoke`` test not judged yet. It sets no
traffic (the candidate keeps 0%), and it stays pending for as long as it is **deferred**: by an outage
the live deployment shares (``details.outage``, for up to ``smoke.max_wait``), by a refusal of the
service's identity while a role assignment applies (401) or by throttling (429) (``details.deferred``,
bounded by the same ``smoke.max_wait``, one clock from the first deferral of any kind).
Making the person responsible for the model wait that long to roll back, pause or promote is not
acceptable, and a deferral is not a transition being carried out.

So an operator's transition **supersedes** a smoke test not judged yet (:func:`supersedable`): it is
written in its place, conditionally on the flight still holding that very transition
(:func:`handlers.rollout.changes.supersede`, an ETag-conditional write in the Table ledger). The smoke
test's verdict is written the same way (:func:`handlers.rollout.changes.judge`, marked :data:`JUDGED`)
before its record: whichever write comes first wins, the other finds the flight changed and does
nothing, so never both. A smoke test judged already, and every other pending transition (traffic being
set, a rollback, a comparison's jobs being started), is carried out first, as before.
"""

from __future__ import annotations

import json
from typing import Any

from handlers.rollout.progress import Transition
from handlers.rollout.smoke_outage import DEFERRED, OUTAGE, WAITED, tried

JUDGED = "judged"  # in a smoke transition's details: when its verdict was written ahead (it is carried out next)


def judged(pending: Transition) -> bool:
    """Whether ``pending`` is a smoke test whose verdict was written ahead (its record and commit follow)."""
    return JUDGED in pending.details


def supersedable(pending: Transition) -> bool:
    """Whether an operator's transition may take the place of ``pending``: a smoke test not judged yet
    (deferred, or its requests being sent: it changes nothing in Azure and its verdict is written only if
    it is still pending). Anything else pending is carried out first."""
    return pending.row.invokes == "smoke" and not judged(pending)


def same(a: Transition | None, b: Transition | None) -> bool:
    """Whether two transitions are the very same one, as the flight keeps them (not only the same id: a
    smoke test written again after a pause and a resume has the id of the one it replaced; it differs by
    ``details.round``, the smoke tests superseded before it, even when its ``written`` time is the same)."""
    if a is None or b is None:
        return a is b
    return json.dumps(a.to_dict(), sort_keys=True, default=str) == json.dumps(b.to_dict(), sort_keys=True, default=str)


def deferral(pending: Transition) -> dict[str, Any] | None:
    """What kept the smoke test ``pending`` waiting, for the record: the outage (``why``, ``since``, ``times``,
    ``last``, ``until``) or the refusal or throttling (``why``, ``since``, ``times``, ``last``, ``until``); None when it was
    never deferred (its requests were being sent, or not sent yet)."""
    outage = pending.details.get(WAITED)
    if isinstance(outage, dict):
        return {"why": OUTAGE, **outage}
    refused = pending.details.get(DEFERRED)
    return dict(refused) if isinstance(refused, dict) else None


def superseded(pending: Transition) -> dict[str, Any]:
    """The ``superseded`` details of the operator's record: the smoke transition it replaced and its deferral."""
    return {"id": pending.id, "kind": pending.kind, "deferred": deferral(pending)}


def said(pending: Transition) -> str:
    """The end of the operator's reason: which smoke test it replaced, and why that one waited."""
    waited = deferral(pending)
    if waited is None:
        return "; it supersedes the smoke test not judged yet (its requests unanswered so far; no traffic was changed)"
    times = int(waited.get("times") or 0)
    return f"; it supersedes the smoke test deferred since {waited.get('since')} ({tried(times)}): {waited.get('why')}"
