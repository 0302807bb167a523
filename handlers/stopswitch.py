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

from handlers import guards, operate_rules
from handlers.approval_rules import identity
from handlers.errors import Forbidden, InvalidInput, NotFound
from handlers.freeze import ACTIONS
from handlers.keys import digest
from handlers.records import DecisionRecord, iso

if TYPE_CHECKING:
    from collections.abc import Mapping

    from handlers.ports import Ledger
    from handlers.records import ModelState
    from handlers.signals import Trigger

log = logging.getLogger(__name__)


def kept(frozen: Mapping[str, Any] | None, caller: Mapping[str, Any], verb: str = "unfreeze") -> str | None:
    """Why ``caller`` may not change the stop switch ``frozen`` (lift it, or set it anew: a freeze of fewer
    actions would lift the rest), or None. A switch set by someone the record names (a signed-in principal,
    the command line's login) is changed only by someone it names too: a function key names nobody, and a
    leaked one must not undo what a person set in an incident."""
    if frozen is None or not frozen.get("identity") or identity(caller) is not None:
        return None
    return (
        f"frozen by {frozen.get('by')} ({frozen.get('why')}); a function key names nobody, so it cannot change what "
        f"a person set: {verb} signed in (RETRAIN_APP_SERVICE_AUTH=true, docs/security.md) or with 'retrain {verb}'"
    )


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
        who = operate_rules.who(trigger)
        switch: dict[str, Any] | None = (
            {"by": who, "why": reason, "at": iso(now), "actions": list(wanted)} if on else None
        )
        verb = "freeze" if on else "unfreeze"
        caller = dict(trigger.caller)
        if switch is not None:
            switch["identity"] = identity(caller)  # who set it, as four eyes tell people apart (kept)
        else:
            held = [(m, why) for m in chosen if (why := kept(self.ledger.get_model(m).frozen, caller))]
            if held:
                raise Forbidden("; ".join(f"{m}: {why}" for m, why in held))
        out = []
        for model in chosen:
            refused: list[str] = []

            def flip(s: ModelState, refused: list[str] = refused) -> tuple[ModelState | None, bool]:
                why = kept(s.frozen, caller, verb)  # a freeze anew: recorded skipped; a lift: set since the look
                if why is not None:
                    refused.append(why)
                    return None, False
                return guards.switch(s, switch)

            changed = self.ledger.update_model(model, flip)
            what = f"{', '.join(wanted)} frozen" if on else "the stop switch lifted"
            said = (
                f"{what} by {who}: {reason}"
                if changed
                else f"{verb}: nothing changed, {refused[-1]}"
                if refused
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
