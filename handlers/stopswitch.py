"""The stop switch: ``POST /api/freeze`` and ``/api/unfreeze`` (and ``retrain freeze``/``unfreeze``) set
or lift a freeze on every model of the policy, or on the models named, recorded per model with who
asked and why. While it is on, the guards refuse new work it names (:mod:`handlers.freeze`), and
rollouts hold their step; rollbacks go on. It lives in each model's state, so the guards read it in
the same atomic read-and-write as the slot they refuse: no request is added to a delivery's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handlers import guards, operate
from handlers.errors import InvalidInput, NotFound
from handlers.freeze import ACTIONS
from handlers.keys import digest
from handlers.records import DecisionRecord, iso

if TYPE_CHECKING:
    from handlers.ports import Ledger
    from handlers.signals import Trigger

log = logging.getLogger(__name__)


class StopSwitch:
    def __init__(
        self,
        ledger: Ledger,
        write: Callable[[DecisionRecord], DecisionRecord],
        models: Callable[[], Sequence[str]],
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.write = write
        self.models = models
        self.clock = clock

    def set(
        self,
        on: bool,
        trigger: Trigger,
        reason: str,
        *,
        models: Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
    ) -> list[DecisionRecord]:
        """Set (``on``) or lift the switch on ``models`` (default: every model of the policy) for
        ``actions`` (default all: retrain, deploy, promote); one record per model, ``submitted`` when
        it changed the model, ``skipped`` when it was so already."""
        known = list(self.models())
        chosen = list(models) if models else known
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise NotFound(f"model(s) {', '.join(map(repr, unknown))} not in the policy; known: {', '.join(known)}")
        wanted = tuple(actions) if actions else ACTIONS
        bad = [a for a in wanted if a not in ACTIONS]
        if bad:
            raise InvalidInput(f"action(s) {', '.join(map(repr, bad))} cannot be frozen; use {', '.join(ACTIONS)}")
        now = self.clock()
        who = operate.who(trigger)
        switch: dict[str, Any] | None = (
            {"by": who, "why": reason, "at": iso(now), "actions": list(wanted)} if on else None
        )
        verb = "freeze" if on else "unfreeze"
        out = []
        for model in chosen:
            changed = self.ledger.update_model(model, lambda s: guards.switch(s, switch))
            what = f"{', '.join(wanted)} frozen" if on else "the stop switch lifted"
            said = (
                f"{what} by {who}: {reason}"
                if changed
                else f"{verb}: nothing to change ({'frozen' if on else 'not frozen'} already)"
            )
            record = DecisionRecord(
                id=f"sw-{digest(model, verb, trigger.event_id, iso(now), length=16)}",
                model=model,
                action=verb,
                outcome="submitted" if changed else "skipped",
                reason=said,
                trigger=trigger.as_dict(),
                at=iso(now),
                details={"switch": switch, "changed": changed},
            )
            out.append(self.write(record))
            log.info("stop switch %s model=%s by %s: %s", verb, model, who, "changed" if changed else "unchanged")
        return out
