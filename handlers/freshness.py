"""Retrains the reconciler starts when no event tells of a reason (the pure rules; :mod:`handlers.watcher`
reads the facts and carries them out):

- **model age** (``retrain.max_age``): the champion (the model version the endpoint's live deployment
  serves) is older than the age, by its version's creation time: in the workspace, or, for a version served
  from the policy's registry (``environment.registry``), in that registry (when it was shared there: its
  training in the upstream workspace was earlier). One retrain per champion and period: a
  champion 30 days old with ``max_age: 30d`` gets one, and, if it is still the champion at 60 days,
  another; never one per pass.
- **new data-asset versions** (``retrain.on.data.assets``): data assets publish no event, so the
  reconciler lists each named asset's versions. The first look marks the newest version as where
  watching starts (:func:`baseline`, recorded; nothing is retrained on data the service found there);
  each version created after the mark starts one retrain (:func:`asset_retrain`), keyed by the version,
  and becomes the mark; versions that came together with a newer one are covered by the newer one's
  retrain (recorded as such).

Each decision's trigger is the reconciler's, keyed by what it is about, so every pass (and every
worker) makes the same decision, with the same id and job name: the ledger says whether it was made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from handlers.plans import Retrain, Skip, decision_id, skip
from handlers.records import iso, span
from handlers.retrain_plan import retrain
from handlers.signals import RECONCILER_CHANNEL, Trigger

if TYPE_CHECKING:
    from handlers.policy import ModelPolicy

MAX_AGE = "retrain.max_age"  # the event type of an age retrain's trigger
NEW_ASSET_VERSION = "retrain.on.data.assets"  # ... and of a new data-asset version's
ASSET_EVENT = "data-asset:"  # ... keyed by the version (data-asset:<name>:<version>)


@dataclass(frozen=True)
class AssetVersion:
    """A version of a model or data asset as the workspace reports it; ``created``: its creation time
    (``systemData.createdAt``), None when the workspace did not say."""

    name: str
    version: str
    created: datetime | None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Champion:
    """The model version an online endpoint's live deployment (``endpoint/deployment``) serves. ``registry``:
    the Azure ML registry it is served from and was read from (None: a workspace version); ``unread``: why
    it was not read (a registry the policy does not name: its age and lineage are unknown)."""

    where: str
    version: AssetVersion
    registry: str | None = None
    unread: str | None = None

    @property
    def label(self) -> str:
        """``name:version``, and the registry it is served from."""
        return self.version.label if self.registry is None else f"{self.version.label} of registry {self.registry}"

    @property
    def key(self) -> str:
        """What a decision about it is keyed by: a registry's version is not the workspace's of that number."""
        return self.version.label if self.registry is None else f"registry/{self.registry}/{self.version.label}"


def periods(created: datetime, max_age: timedelta, now: datetime) -> int:
    """How many whole ``max_age`` periods the champion has lived (0: it is younger than the age)."""
    return max(0, int((now - created) / max_age))


def age_trigger(model: str, champion: Champion, period: int) -> Trigger:
    return Trigger(f"model:{model}", f"max-age:{champion.key}:{period}", MAX_AGE, channel=RECONCILER_CHANNEL)


def age_retrain(
    model: str, mp: ModelPolicy, champion: Champion, max_age: timedelta, now: datetime
) -> Retrain | Skip | None:
    """The retrain of a champion older than ``max_age`` (None: it is not, or its age is unknown)."""
    created = champion.version.created
    period = periods(created, max_age, now) if created is not None else 0
    if created is None or period < 1:
        return None
    reason = (
        f"model age: the champion {champion.label} ({champion.where}) was created {iso(created)}, "
        f"{span(timedelta(days=(now - created).days) or now - created)} ago, older than retrain.max_age {span(max_age)}"
    )
    decision = retrain(model, mp, age_trigger(model, champion, period), reason, {}, {})
    if isinstance(decision, Skip):
        return decision
    # what a backtest needs to judge another max_age on the same champion (handlers.backtest_starts)
    age = {"champion": champion.label, "key": champion.key, "where": champion.where, "created": iso(created)}
    return replace(decision, details={**decision.details, "age": age})


def asset_trigger(model: str, version: AssetVersion) -> Trigger:
    return Trigger(f"model:{model}", f"{ASSET_EVENT}{version.label}", NEW_ASSET_VERSION, channel=RECONCILER_CHANNEL)


def baseline(model: str, asset: str, newest: AssetVersion | None) -> Skip:
    """The record of where watching ``asset`` starts for ``model``: its newest version when first looked at
    (None: it has none yet; every version then counts as new). The mark itself is kept in the model's state."""
    trigger = Trigger(f"model:{model}", f"data-asset:{asset}:watched", NEW_ASSET_VERSION, channel=RECONCILER_CHANNEL)
    if newest is None:
        why = f"watching data asset {asset!r} for new versions (retrain.on.data.assets): it has none yet"
    else:
        why = (
            f"watching data asset {asset!r} for new versions (retrain.on.data.assets) from {newest.label} (created "
            f"{iso(newest.created) if newest.created else 'at an unknown time'}): a newer version starts a retrain"
        )
    return skip(trigger, why, model, asset=asset, version=newest.version if newest else None, created=at(newest))


def at(version: AssetVersion | None) -> str | None:
    return iso(version.created) if version is not None and version.created is not None else None


def newer(versions: list[AssetVersion], since: str | None, since_version: str | None) -> list[AssetVersion]:
    """The versions created after the mark (``since``, its creation time; ``since_version`` its version),
    oldest first. Without a creation time, a version counts by being another one than the mark's."""
    out = [
        v
        for v in versions
        if v.version != since_version and (since is None or v.created is None or iso(v.created) > since)
    ]
    return sorted(out, key=lambda v: (v.created is None, v.created or datetime.min, v.version))


def asset_decision_id(model: str, version: AssetVersion) -> str:
    return decision_id("retrain", model, asset_trigger(model, version))


def asset_retrain(model: str, mp: ModelPolicy, version: AssetVersion, covers: list[AssetVersion]) -> Retrain | Skip:
    """The retrain a new version of a named data asset starts; ``covers``: older new versions found with it."""
    created = f", created {iso(version.created)}" if version.created else ""
    also = f"; it covers {', '.join(v.version for v in covers)}, found with it" if covers else ""
    reason = f"new data: data asset version {version.label}{created} (retrain.on.data.assets){also}"
    return retrain(model, mp, asset_trigger(model, version), reason, {}, {})


def covered(model: str, version: AssetVersion, by: str) -> Skip:
    """An older new version found together with a newer one: retrained on by the newer one's retrain."""
    return Skip(
        asset_decision_id(model, version),
        model,
        f"new data: data asset version {version.label} is covered by the retrain of a newer version found with it ({by})",
        asset_trigger(model, version),
        details={"covered_by": by},
    )
