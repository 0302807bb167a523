"""The smoke test's world (tests/test_smoke*.py): a policy that smoke-tests ``sklearn_regression_model``'s
candidates, one candidate deployed through the real Azure ML SDK against the fake ARM and provisioned,
invoked through the endpoint's scoring URI (tests/fake_scoring.py); and ledgers whose worker dies at a
rollout record, for the crash points."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers import guards
from handlers.policy import Policy
from handlers.records import DecisionRecord, ModelState
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.conftest import REPO
from tests.crashes import WorkerDied
from tests.ledgers import LedgerSpec
from tests.rollouts import Reads

SAMPLES = [{"data": [[1, 2, 3]]}, {"data": [[4, 5, 6], [7, 8, 9]]}]
SCHEMA = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array", "items": {"type": "number"}}},
}


def policy(mirror: dict[str, Any] | None = None, **smoke: Any) -> Policy:
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    raw["models"][MODEL]["deploy"]["rollout"]["smoke"] = {"requests": SAMPLES, **smoke}
    if mirror is not None:
        raw["models"][MODEL]["deploy"]["rollout"]["mirror"] = mirror
    return Policy.model_validate(raw)


class Smoke(Reads):
    """A world whose policy smoke-tests ``sklearn_regression_model``'s candidates, one deployed and provisioned."""

    def __init__(self, tmp_path: Path, spec: LedgerSpec, aad: bool = True, **smoke: Any) -> None:
        self.azure = AzureWorld(tmp_path, spec, policy=policy(**smoke))
        if aad:
            self.azure.arm.scoring.aad(ENDPOINT)
        [self.deploy] = self.azure.deliver(self.azure.finished_run(r2="0.61")).decisions
        assert self.deploy.outcome == "submitted"
        self.name = str(self.deploy.details["rendered"]["deployment"])
        self.azure.provisioned()

    def state(self, **service: Any) -> str:
        [entry] = self.azure.new_worker(**service).reconcile().rollouts
        return str(entry["state"])


def smoke_worlds(tmp_path: Path, ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A test module's ``world`` fixture: makes :class:`Smoke` worlds, closed after the test, each
    checked to have seen no request the fake ARM did not expect."""
    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure
    made: list[Smoke] = []

    def make(**kw: Any) -> Smoke:
        made.append(Smoke(tmp_path, ledger_spec, **kw))
        return made[-1]

    yield make
    for smoke in made:
        smoke.azure.close()
        assert smoke.azure.arm.unexpected == []


class _DiesAtRecord:
    """A ledger whose worker dies right after a rollout record of the prefix is written."""

    prefix = ""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        if record.id.startswith(self.prefix):
            raise WorkerDied
        return self.inner.put_decision(record)  # type: ignore[no-any-return]


def pending_written(new: ModelState | None) -> dict[str, Any] | None:
    """The rollout's pending transition (as the flight keeps it) in the state a change writes; None: none written."""
    flight = new.flights.get(guards.ROLLOUT) if new is not None else None
    return (flight.data.get("rollout") or {}).get("pending") if flight is not None else None


class DiesWritingPending:
    """A ledger whose worker dies as it writes a rollout's pending transition that ``dies(pending)`` picks
    (a smoke test's deferral, its verdict): the flight keeps what it held before."""

    def __init__(self, inner: Any, dies: Callable[[dict[str, Any]], bool]) -> None:
        self.inner, self.dies = inner, dies

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_model(self, model: str, change: Any) -> Any:
        def dying(state: ModelState) -> Any:
            new, result = change(state)
            pending = pending_written(new)
            if pending and self.dies(pending):
                raise WorkerDied
            return new, result

        return self.inner.update_model(model, dying)


class DiesAtSmokeRecord(_DiesAtRecord):
    prefix = "sm-"


class DiesAtStepRecord(_DiesAtRecord):
    prefix = "rs-"


class DiesAtLoadRecord(_DiesAtRecord):
    prefix = "ld-"


def json_dump(value: Any) -> str:
    return json.dumps(value)


def json_free_of(value: Any, key: str) -> bool:
    return f'"{key}"' not in json_dump(value)
