"""New data as a trigger (``retrain.on.data``): the pure rules.

A ``Microsoft.Storage.BlobCreated`` event of a storage account's system topic concerns the models whose
policy names that account, the blob's container and a prefix of its name; anything else is a recorded
skip (the trust boundary: only the accounts and prefixes the policy names). A blob that concerns a model
is not a retrain of its own: it is counted into the model's *burst* (:func:`collected`, kept in the
model's state), and the reconciler starts one retrain for the burst once no new blob has come for the
policy's ``settle`` (:func:`settled`, :func:`burst_retrain`), then clears it (:func:`cleared`). A file
drop of 500 blobs is one retrain, after its last blob.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers.keys import digest
from handlers.plans import Collect, Decision, Retrain, Skip, decision_id, skip
from handlers.records import ModelState, from_iso, iso, span
from handlers.retrain_plan import retrain
from handlers.signals import BLOB_CREATED, RECONCILER_CHANNEL, BlobCreated, Trigger

if TYPE_CHECKING:
    from handlers.policy import Policy
    from handlers.trigger_rules import DataRule


def data_rule(policy: Policy, model: str) -> DataRule | None:
    mp = policy.models.get(model)
    return mp.retrain.on.data if mp is not None and mp.retrain is not None else None


def on_blob(signal: BlobCreated, policy: Policy) -> list[Decision]:
    """One Collect per model whose policy names the blob's account, container and a prefix of its
    name; a recorded skip for each model that names the account but not this blob, or one skip when
    no model names the account."""
    trigger, account = signal.trigger, signal.account.lower()
    where = f"{signal.container}/{signal.blob}"
    named = [(model, rule) for model in policy.models if (rule := data_rule(policy, model)) is not None]
    same = [(m, r) for m, r in named if any(b.account.lower() == account for b in r.blobs)]
    if not same:
        return [
            skip(
                trigger,
                f"blob {where[:300]} was created in storage account {signal.account[:300]!r}, which no model's "
                "retrain.on.data.blobs names: it is recorded, not acted on; to retrain on it, name the account "
                "under models.<model>.retrain.on.data.blobs",
                account=signal.account[:300],
            )
        ]
    out: list[Decision] = []
    for model, rule in same:
        sources = [b for b in rule.blobs if b.account.lower() == account]
        if ambiguous(signal.blob):
            out.append(
                skip(
                    trigger,
                    f"blob {where[:300]} has a '.' or '..' segment or a backslash in its name, so whether it lies "
                    f"under what models.{model}.retrain.on.data.blobs names depends on who resolves the path: "
                    "recorded, not acted on",
                    model,
                )
            )
            continue
        if not any(b.container == signal.container and signal.blob.startswith(b.prefix) for b in sources):
            places = ", ".join(f"{b.container}/{b.prefix}" for b in sources)
            out.append(
                skip(
                    trigger,
                    f"blob {where[:300]} is outside what models.{model}.retrain.on.data.blobs names in this account "
                    f"({places}): recorded, not acted on",
                    model,
                )
            )
            continue
        reason = f"new data: blob {where[:300]} created in {signal.account.rsplit('/', 1)[-1]}"
        out.append(Collect(decision_id("collect", model, trigger), model, reason, trigger, where, rule.settle))
    return out


def ambiguous(blob: str) -> bool:
    """A blob name whose place depends on who reads it: a ``.`` or ``..`` segment (``prefix/../other`` is
    under ``prefix/`` as a string, and ``other`` once a path is resolved) or a backslash (a separator to some
    tools). Prefixes are matched on the name as it is, so such a name counts for no model."""
    return "\\" in blob or any(part in (".", "..") for part in blob.split("/"))


def collected(state: ModelState, decision: Collect, now: datetime) -> tuple[ModelState, dict[str, Any]]:
    """``state`` with the blob counted into its burst (a new burst when none is open). ``blobs`` counts
    deliveries: a blob delivered again after its worker died mid-delivery is counted twice; what
    matters, when the burst's last blob came, is exact."""
    at, burst = iso(now), state.burst
    if burst is None:
        trigger = decision.trigger
        burst = {
            "id": "bu-" + digest(state.model, trigger.source.lower(), trigger.event_id),
            "account": trigger.source[:300],
            "first": at,
            "last": at,
            "blobs": 1,
            "latest": decision.blob[:300],
        }
    else:
        last = max(from_iso(burst.get("last")) or now, now)
        burst = {**burst, "last": iso(last), "blobs": int(burst.get("blobs") or 0) + 1, "latest": decision.blob[:300]}
    return replace(state, burst=burst), burst


def settled(burst: dict[str, Any] | None, settle: timedelta, now: datetime, max_wait: timedelta | None = None) -> bool:
    """The burst's last blob came at least ``settle`` ago, or (``max_wait``) its first blob came at least
    that long ago, however many have come since (a trickle that never settles): its retrain may start."""
    last = from_iso(burst.get("last")) if burst else None
    first = from_iso(burst.get("first")) if burst else None
    if max_wait is not None and first is not None and first + max_wait <= now:
        return True
    return last is not None and last + settle <= now


def cleared(state: ModelState, seen: dict[str, Any]) -> tuple[ModelState | None, bool]:
    """The burst ``seen`` retrained on (or skipped for good) taken out of ``state``. Blobs counted into it
    after it was seen stay, as a burst of their own (its id follows from the one retrained on)."""
    burst = state.burst
    if burst is None or burst.get("id") != seen.get("id"):
        return None, False
    if burst.get("last") == seen.get("last") and burst.get("blobs") == seen.get("blobs"):
        return replace(state, burst=None), True
    rest = {
        **burst,
        "id": "bu-" + digest(str(seen["id"]), str(seen.get("last")), str(seen.get("blobs"))),
        "first": seen.get("last"),
        "blobs": max(1, int(burst.get("blobs") or 0) - int(seen.get("blobs") or 0)),
    }
    return replace(state, burst=rest), True


def burst_trigger(burst: dict[str, Any]) -> Trigger:
    """The trigger of a burst's retrain: the reconciler's, keyed by the burst, so every pass (and every
    worker) that starts it makes the same decision, with the same job name."""
    return Trigger(
        str(burst.get("account") or "storage"), f"burst:{burst['id']}", BLOB_CREATED, channel=RECONCILER_CHANNEL
    )


def burst_retrain(
    model: str, policy: Policy, burst: dict[str, Any], settle: timedelta, now: datetime | None = None
) -> Retrain | Skip:
    """The retrain a settled burst starts (or the skip that says why it cannot); ``now``: when it is
    started, which says whether it settled or reached the policy's ``max_wait``."""
    trigger = burst_trigger(burst)
    mp = policy.models.get(model)
    rule = data_rule(policy, model)
    if mp is None or rule is None:
        return skip(trigger, f"new data for {model!r} recorded; the policy no longer retrains it on new data", model)
    head = f"new data: {burst.get('blobs')} blob(s) from {burst.get('first')} to {burst.get('last')} (the last {burst.get('latest')})"
    last = from_iso(burst.get("last"))
    if now is not None and rule.max_wait is not None and last is not None and last + settle > now:
        reason = f"{head}, still coming, but the first came {span(rule.max_wait)} ago or more (on.data.max_wait)"
    else:
        reason = f"{head}, none since for {span(settle)}"
    return retrain(model, mp, trigger, reason, {}, {})
