"""The reconciler's look for reasons to retrain that no event brings (:mod:`handlers.freshness`): a
champion older than ``retrain.max_age`` and new versions of the data assets ``retrain.on.data.assets``
names. The facts are read through the :class:`Freshness` port (the workspace), the decisions are the
pure rules', and each is started once through the executor's guards (:mod:`handlers.starts`).

Nothing is read for a model whose retrain slot is held (a retrain in flight or waiting for approval):
its outcome may change the champion, and the next pass looks again. The champion's age is looked at
once per ``age_every`` per worker (it changes only by a promotion or with time), the data assets on every pass.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from handlers import freshness, guards, starts
from handlers.executor import Executor
from handlers.plans import Skip
from handlers.ports import Ledger
from handlers.records import DecisionRecord, ModelState

if TYPE_CHECKING:
    from handlers.policy import ModelPolicy, Policy

log = logging.getLogger(__name__)


@runtime_checkable
class Freshness(Protocol):
    """What the workspace says of a model's champion and of a data asset's versions."""

    def champion(self, endpoint: str, registry: str | None = None) -> freshness.Champion | None:
        """The model version the online endpoint's live deployment (the one with the most traffic) serves,
        with its creation time; None when the endpoint serves nothing, or a model that is no version.
        A version served from ``registry`` (the policy's ``environment.registry``) is read from it; one
        served from any other registry is not read (``unread`` says why, its age is unknown).
        Raises TransientError / PermanentError like every read."""
        ...

    def data_versions(self, name: str) -> list[freshness.AssetVersion]:
        """Every version of the workspace's data asset ``name`` (none: [])."""
        ...


class Watcher:
    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        executor: Executor,
        facts: Freshness,
        age_every: timedelta = timedelta(hours=1),
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.executor = executor
        self.facts = facts
        self.age_every = age_every
        self.aged: dict[str, datetime] = {}  # when this worker last read each model's champion (efficiency only)

    def watched(self) -> list[str]:
        """The models whose policy has a reason only the reconciler can find."""
        return [m for m, mp in self.policy.models.items() if mp.retrain and (mp.retrain.max_age or _assets(mp))]

    def look(self, state: ModelState, now: datetime) -> list[DecisionRecord]:
        """What ``state``'s model gets in this pass: the retrains started (or waiting for the guards) and
        what was recorded of the data assets' versions. Raises what the port raises."""
        model = state.model
        mp = self.policy.models.get(model)
        if mp is None or mp.retrain is None or guards.RETRAIN in state.flights:
            return []
        out: list[DecisionRecord] = []
        for asset in _assets(mp):
            out.extend(self._asset(model, mp, asset, now))
            if any(r.action == "retrain" and r.outcome in ("submitted", "pending", "planned") for r in out):
                return out  # one retrain at a time: the next pass looks again
        if mp.retrain.max_age is not None:
            out.extend(self._age(model, mp, mp.retrain.max_age, now))
        return out

    def _age(self, model: str, mp: ModelPolicy, max_age: timedelta, now: datetime) -> list[DecisionRecord]:
        last = self.aged.get(model)
        if mp.deploy is None or mp.deploy.endpoint is None or (last is not None and now - last < self.age_every):
            return []
        registry = mp.environment.serves_from if mp.environment is not None else None
        champion = self.facts.champion(mp.deploy.endpoint, registry)
        self.aged[model] = now
        if champion is not None and champion.unread:
            log.warning("model age of model=%s is unknown: %s", model, champion.unread)
        decision = freshness.age_retrain(model, mp, champion, max_age, now) if champion is not None else None
        if decision is None:
            return []
        record, status = starts.start(self.executor, self.ledger, decision, now)
        if status == "waits":
            self.aged.pop(model, None)  # refused by a guard: looked at again on the next pass
        if status in ("made", "reserved"):  # this champion's retrain of this period was made (or is being made)
            return []
        log.info("model age of model=%s: %s (%s)", model, record.outcome, record.id)
        return [record]

    def _asset(self, model: str, mp: ModelPolicy, asset: str, now: datetime) -> list[DecisionRecord]:
        """The newest version of ``asset`` created since the model's mark (``ModelState.assets``) starts a
        retrain; the mark moves to it once the retrain is made (a pass that dies in between is repeated
        by the next, which finds the decision made). Without a mark, the newest version becomes it."""
        versions = self.facts.data_versions(asset)
        mark = (self.ledger.get_model(model).assets or {}).get(asset)
        if mark is None:  # the first look: where watching starts (recorded), nothing retrained on it
            newest = max(versions, key=_order, default=None)
            record = starts.start(self.executor, self.ledger, freshness.baseline(model, asset, newest), now).record
            self._mark(model, asset, newest)
            return [record]
        new = freshness.newer(versions, mark.get("created"), mark.get("version"))
        if not new:
            return []
        latest, out = new[-1], list[DecisionRecord]()
        older = [v for v in new[:-1] if starts.made(self.ledger, freshness.asset_decision_id(model, v), model) is None]
        decision = freshness.asset_retrain(model, mp, latest, older)
        started = starts.start(self.executor, self.ledger, decision, now)
        if started.status == "reserved":  # being made by a worker (its lease, then the repair): marked once made
            return out
        if started.now or isinstance(decision, Skip):  # a skip (a bad input) is said again until marked
            record = started.record
            out.append(record)
            log.info(
                "data asset %s of model=%s: version %s %s (%s)", asset, model, latest.version, record.outcome, record.id
            )
            if started.status == "waits":
                return out
            for version in older:
                out.append(
                    starts.start(self.executor, self.ledger, freshness.covered(model, version, record.id), now).record
                )
        self._mark(model, asset, latest)
        return out

    def _mark(self, model: str, asset: str, version: freshness.AssetVersion | None) -> None:
        mark = {"version": version.version if version else None, "created": freshness.at(version)}

        def change(state: ModelState) -> tuple[ModelState | None, None]:
            marks = dict(state.assets or {})
            if marks.get(asset) == mark:
                return None, None
            return replace(state, assets={**marks, asset: mark}), None

        self.ledger.update_model(model, change)

    def states(self) -> list[ModelState]:
        """The watched models' states, read now (this pass may have started or ended a retrain)."""
        return [self.ledger.get_model(m) for m in self.watched()]


def _assets(mp: ModelPolicy) -> list[str]:
    data = mp.retrain.on.data if mp.retrain is not None else None
    return list(data.assets) if data is not None else []


def _order(v: freshness.AssetVersion) -> tuple[bool, datetime, str]:
    return (v.created is not None, v.created or datetime.min, v.version)
