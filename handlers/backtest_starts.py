"""The retrains the reconciler started, decided again by a draft policy's rules (pure), for
``retrain backtest`` (:mod:`handlers.backtest`).

No event tells of these: the reconciler read the workspace (a champion's age, a data asset's versions)
or the ledger (a burst of new blobs that settled) and started them (:mod:`handlers.watcher`,
:mod:`handlers.settler`). Their records are what is left of that reading, so the replay puts each one to
the draft at the moment it was recorded:

- **model age** (``retrain.max_age``): the draft must set a ``max_age``; the record keeps the champion
  and its creation time (``details.age``), so the draft's age is judged on them: younger than it, no
  retrain; older, the draft's retrain of that champion and period. (A record written before the creation
  time was kept is replayed as it was, when the draft sets a ``max_age`` at all.)
- **a new data-asset version** (``retrain.on.data.assets``): the draft must still name the asset.
- **a settled burst of new blobs** (``retrain.on.data``): the draft must still retrain the model on new blobs.

What cannot be replayed honestly, and is not: a retrain the draft would start at a moment nobody
recorded (a shorter ``max_age`` or ``settle``, a rule the draft adds): what the reconciler would have
read then was never read. :data:`NOTE` says so in the report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from handlers import freshness, newdata
from handlers.plans import Retrain, Skip, skip
from handlers.records import DecisionRecord, from_iso, iso, span
from handlers.retrain_plan import retrain
from handlers.signals import BLOB_CREATED, RECONCILER_CHANNEL, Trigger

if TYPE_CHECKING:
    from handlers.policy import Policy

KINDS = (freshness.MAX_AGE, freshness.NEW_ASSET_VERSION, BLOB_CREATED)  # the reconciler's retrains replayed
NOTE = (
    "retrains the reconciler started (model age, new data-asset versions, settled bursts of new blobs) are "
    "replayed at the moments they were recorded, through the draft's rules and guards; one the draft would start at "
    "another moment (a shorter max_age or settle, a rule it adds) is not replayed: what the reconciler would have "
    "read then was never read"
)


def replayed(record: DecisionRecord) -> bool:
    """Whether ``record`` is a retrain the reconciler started, of a kind the replay decides again."""
    trigger = record.trigger
    return (
        record.action == "retrain"
        and trigger.get("channel") == RECONCILER_CHANNEL
        and trigger.get("event_type") in KINDS
        and record.model is not None
    )


def redecide(draft: Policy, record: DecisionRecord, at: datetime) -> Retrain | Skip:
    """What ``draft``'s rule makes at ``at`` of the reconciler's recorded retrain ``record``."""
    model = str(record.model)
    trigger = Trigger.from_dict(record.trigger)
    mp = draft.models.get(model)
    rule = mp.retrain if mp is not None else None
    if mp is None or rule is None:
        return skip(trigger, f"the draft does not retrain model {model!r}", model)
    if trigger.event_type == freshness.MAX_AGE:
        if rule.max_age is None or mp.deploy is None or mp.deploy.endpoint is None:
            return skip(trigger, f"the draft sets no retrain.max_age for model {model!r}: no retrain by age", model)
        return _aged(model, draft, record, trigger, rule.max_age, at)
    if trigger.event_type == freshness.NEW_ASSET_VERSION:
        asset = trigger.event_id.removeprefix("data-asset:").rsplit(":", 1)[0]
        data = rule.on.data
        if data is None or asset not in data.assets:
            why = f"the draft does not watch data asset {asset!r} for model {model!r} (retrain.on.data.assets)"
            return skip(trigger, why, model)
        return retrain(model, mp, trigger, record.reason, {}, {})
    data = newdata.data_rule(draft, model)
    if data is None or not data.blobs:
        return skip(trigger, f"the draft does not retrain model {model!r} on new blobs (retrain.on.data)", model)
    return retrain(model, mp, trigger, record.reason, {}, {})


def _aged(
    model: str, draft: Policy, record: DecisionRecord, trigger: Trigger, max_age: timedelta, at: datetime
) -> Retrain | Skip:
    """The draft's age retrain of the recorded champion at ``at``, judged on its recorded creation time."""
    age = record.details.get("age")
    created = from_iso(str(age.get("created") or "")) if isinstance(age, dict) else None
    if not isinstance(age, dict) or created is None:  # recorded before the creation time was kept
        return retrain(model, draft.models[model], trigger, record.reason, {}, {})
    period = freshness.periods(created, max_age, at)
    champion = str(age.get("champion") or "")
    if period < 1:
        why = (
            f"model age: the champion {champion} was created {iso(created)}, {span(at - created)} before "
            f"{iso(at)}: younger than the draft's retrain.max_age {span(max_age)}"
        )
        return skip(trigger, why, model)
    key = str(age.get("key") or champion)
    again = Trigger(trigger.source, f"max-age:{key}:{period}", freshness.MAX_AGE, channel=RECONCILER_CHANNEL)
    reason = (
        f"model age: the champion {champion} ({age.get('where')}) was created {iso(created)}, older than "
        f"the draft's retrain.max_age {span(max_age)}"
    )
    return retrain(model, draft.models[model], again, reason, {}, {})
