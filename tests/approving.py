"""A deploy waiting for approval under test: the example policy with ``deploy.approval``, the app serving
the routes (tests/test_approvals*.py, tests/test_attacks.py, tests/test_data_authors.py); and a world whose retrain
and deploy may wait for approval while someone registers data (:class:`Watching`: tests/test_data_authors.py,
tests/test_pinned_data.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers import guards
from handlers.policy import Policy
from handlers.records import DecisionRecord, iso
from tests.azure_world import DATASET, ENDPOINT, MODEL, AzureWorld
from tests.builders import ADA, ADA_TOKEN, BOB, CAROL, signed
from tests.conftest import REPO, Client
from tests.ledgers import LedgerSpec

DEPLOYMENTS = rf"^onlineEndpoints/{ENDPOINT}/deployments/[^/]+$"
POISONED = "3"  # the version of the model's training data a workspace user registers
ADA_UPN = str(ADA_TOKEN["upn"])  # how App Service names Ada when she signs in
FOUR_EYES = {"required": True, "expires": "24h", "four_eyes": True}  # an approval no creator of its sources may give
CAROL_TOKEN = {"oid": CAROL, "upn": "carol@contoso.example", "name": "Carol", "idtyp": "user"}  # a third person


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


class Watching(Approving):
    """The example policy (its model trains on ``azureml:diabetes-training@latest``) with the approvals given;
    ``watch``: each new version of that data asset starts a retrain (``retrain.on.data.assets``)."""

    def __init__(
        self,
        tmp_path: Path,
        retrain: dict[str, Any] | None,
        deploy: dict[str, Any] | None,
        watch: bool = True,
        spec: LedgerSpec | None = None,
    ) -> None:
        import main

        raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
        model = raw["models"][MODEL]
        if watch:
            model["retrain"]["on"] = {"data": {"assets": [DATASET]}}
        for section, approval in (("retrain", retrain), ("deploy", deploy)):
            if approval is not None:
                model[section]["approval"] = approval
        spec = spec or LedgerSpec("sqlite", str(tmp_path / "l.db"))
        self.azure = AzureWorld(tmp_path, spec, policy=Policy.model_validate(raw))
        runtime.set_retrainer(self.azure.worker)
        self.client = Client(Host(main.app))

    def register(self, version: str = POISONED, by: dict[str, Any] = ADA_TOKEN) -> None:
        """A new version of the data asset, registered now by a token of ``by`` (Ada, a workspace user)."""
        self.azure.arm.add_data(DATASET, version, created=iso(self.azure.now.now), created_by=by)

    def poisoned(self, by: dict[str, Any] = ADA_TOKEN) -> DecisionRecord:
        """Ada registers a new version of the watched asset; the reconciler's next pass starts its retrain."""
        world = self.azure
        world.reconcile()  # the first look: where watching starts
        self.register(POISONED, by)
        world.now.advance(minutes=5)
        [started] = world.reconcile().started
        assert f"{DATASET}:{POISONED}" in started.reason, started.reason
        return started

    def candidate(self, retrain: DecisionRecord) -> DecisionRecord:
        """The retrain's run completes and passes the gate: its deploy, as the run's event decides it."""
        [deploy] = self.azure.deliver(self.azure.completed(str(retrain.job["name"]))).decisions
        return deploy


def promotion_refused_to_ada(
    watching: Watching, deploy: DecisionRecord, created: str, thing: str = "data asset version"
) -> Any:
    """The rollout of ``deploy`` held before its promotion for a person (``deploy.approval.promote``): Ada's
    promotion is refused for what she created (the ``thing`` ``created``, said in the 403) and nothing moves; Bob's
    goes through. Bob's reply (the promotion's record)."""
    from tests.rollouts import Operated

    operated = Operated.of(watching.azure, watching.client, deploy)
    operated.hold()
    held, path = dict(operated.traffic()), f"/api/models/{MODEL}/promote"
    status, own = watching.post(path, {"reason": "mine"}, signed(ADA, ADA_UPN))
    assert status == 403 and f"created {thing} {created}" in own["error"], own
    assert operated.traffic() == held
    status, promoted = watching.post(path, {"reason": "canary held"}, signed(BOB, "bob@c"))
    assert status == 202 and operated.traffic() == {operated.name: 100}, promoted
    return promoted


def watching_worlds(tmp_path: Path) -> Iterator[Any]:
    """Opens :class:`Watching` worlds (``open_one(retrain=, deploy=, watch=, spec=)``: ``spec`` a ledger, SQLite by
    default) and closes them after the test."""
    worlds: list[Watching] = []

    def open_one(
        retrain: dict[str, Any] | None = None,
        deploy: dict[str, Any] | None = None,
        watch: bool = True,
        spec: LedgerSpec | None = None,
    ) -> Watching:
        worlds.append(Watching(tmp_path, retrain, deploy, watch, spec))
        return worlds[-1]

    yield open_one
    runtime.set_retrainer(None)
    for world in worlds:
        world.azure.close()
        assert world.azure.arm.unexpected == []


def approving_post(operated: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    status, _, out = operated.client.call("POST", path, body, headers)
    return status, out


def opened(tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> Iterator[Approving]:
    world = Approving(tmp_path, spec, approval)
    yield world
    runtime.set_retrainer(None)
    world.azure.close()
    assert world.azure.arm.unexpected == []
