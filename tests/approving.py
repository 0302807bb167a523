"""A deploy waiting for approval under test: the example policy with ``deploy.approval``, the app serving
the routes (tests/test_approvals*.py, tests/test_attacks.py, tests/test_data_authors.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers import guards
from handlers.policy import Policy
from handlers.records import DecisionRecord
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.builders import BOB, signed
from tests.conftest import REPO, Client
from tests.ledgers import LedgerSpec

DEPLOYMENTS = rf"^onlineEndpoints/{ENDPOINT}/deployments/[^/]+$"


class Approving:
    """The example policy with ``deploy.approval`` on the model, the app serving the routes."""

    def __init__(self, tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> None:
        import main

        raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
        raw["models"][MODEL]["deploy"]["approval"] = approval
        self.azure = AzureWorld(tmp_path, spec, policy=Policy.model_validate(raw))
        runtime.set_retrainer(self.azure.worker)
        self.client = Client(Host(main.app))

    def pending(self) -> DecisionRecord:
        [rec] = self.azure.deliver(self.azure.finished_run(r2="0.61")).decisions
        return rec

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST as ``headers`` say; by default signed in as Bob, an operator (four eyes need a signed-in caller)."""
        status, _, out = self.client.call("POST", path, body, signed(BOB, "bob@c") if headers is None else headers)
        return status, out

    def deployments_put(self) -> int:
        return len([c for c in self.azure.arm.requests_to("PUT", DEPLOYMENTS) if c.status in (200, 201)])

    def slot(self) -> Any:
        return self.azure.ledger.get_model(MODEL).flights.get(guards.ROLLOUT)


def approving_post(operated: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    status, _, out = operated.client.call("POST", path, body, headers)
    return status, out


def opened(tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> Iterator[Approving]:
    world = Approving(tmp_path, spec, approval)
    yield world
    runtime.set_retrainer(None)
    world.azure.close()
    assert world.azure.arm.unexpected == []
