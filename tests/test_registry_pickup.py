"""Dev to prod through a registry (issue 25): two environments, each its own service, workspace and
ledger, and one Azure ML registry in a subscription of its own, all driven through the real SDK. The
dev service promotes a candidate, which is shared into the registry with its lineage, and publishes
its promotion as a CloudEvent to its notification topic (the real ``EventGridPublisherClient`` posting
to a local topic, :mod:`tests.topic_receiver`); Event Grid delivers what the topic accepted to the prod
function. The prod service picks the version up once (a redelivery, the poll beside the event, the
event lost and the poll alone), reads it again from the registry, gates it against its own champion
and rolls it out by its registry id; a forged event is a recorded skip."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.signals import UPSTREAM_PROMOTED
from tests import rbac
from tests.azure_world import ENDPOINT, MODEL, WORKSPACE_ID, WS, AzureWorld
from tests.builders import promotion_event, with_environment
from tests.conftest import Client
from tests.crashes import DiesAfterActing, WorkerDied
from tests.fake_http import APP_CLIENT_ID, USER_CLAIMS, USER_UPN
from tests.ledgers import LedgerSpec
from tests.topic_receiver import TopicReceiver

# Two SDK worlds built by the ``envs`` fixture, not the ``azure`` one the conftest marks by: said here, so
# ``make check`` leaves these (20 s of it) to ``make test`` like every other SDK-world test.
pytestmark = pytest.mark.sdk

PROD_WS = "ws-retrain-prod"
# The dev service's identity (it shares the fake credential's: client id, object id), named in prod's policy
UPSTREAM_IDENTITY = [APP_CLIENT_ID, rbac.APP_OID]
DOWNSTREAM = {
    "registry": rbac.REGISTRY,
    "role": "downstream",
    "upstream": WORKSPACE_ID,
    "upstream_identity": UPSTREAM_IDENTITY,
}
REGISTRY_ID = f"azureml://registries/{rbac.REGISTRY}/models/{MODEL}/versions/4"


class Environments:
    """The dev world (upstream, notifying the topic) and the prod world (downstream of dev), sharing a registry."""

    def __init__(self, tmp_path: Path, topic: TopicReceiver, prod_ledger: LedgerSpec) -> None:
        self.topic = topic
        (tmp_path / "dev").mkdir()
        (tmp_path / "prod").mkdir()
        self.dev = AzureWorld(
            tmp_path / "dev",
            policy=with_environment({"registry": rbac.REGISTRY, "role": "upstream"}),
            notifier=topic.notifier(WORKSPACE_ID),  # the dev notifier's source: the workspace it acts for
        )
        self.dev.with_registry("upstream")
        self.prod = AzureWorld(tmp_path / "prod", prod_ledger, policy=with_environment(DOWNSTREAM), workspace=PROD_WS)
        self.prod.with_registry()
        self.prod.arm.registries.registries = self.dev.arm.registries.registries  # one registry, two workspaces

    def promote_in_dev(self, r2: str = "0.71") -> dict[str, Any]:
        """A better candidate rolled out in dev and promoted by an operator, its notifications sent; the
        promotion's CloudEvent as the topic accepted it."""
        dev = self.dev
        _, promote = dev.promoted(r2)
        assert promote.details["shared"]["outcome"] == "shared", promote.reason
        dev.worker.notify()
        [event] = [e for e in self.topic.accepted if e["type"] == UPSTREAM_PROMOTED]
        return dict(event)

    def deploys_in_prod(self) -> list[Any]:
        return [r for r in self.prod.ledger.decisions(MODEL, 100) if r.action == "deploy"]

    def close(self) -> None:
        self.dev.close()
        self.prod.close()


@pytest.fixture
def envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_spec: LedgerSpec) -> Iterator[Environments]:
    """Dev on SQLite; prod on ``ledger_spec`` (each ledger for a test marked both_ledgers)."""
    topic = TopicReceiver().start()
    topic.trust(monkeypatch)
    both = Environments(tmp_path, topic, ledger_spec)
    yield both
    both.close()
    topic.close()
    assert both.dev.arm.unexpected == [] and both.prod.arm.unexpected == []


def _deployed_models(azure: AzureWorld) -> dict[str, str]:
    return {name: str(d["properties"]["model"]) for (e, name), d in azure.arm.deployments.items() if e == ENDPOINT}


def test_a_promotion_in_dev_is_picked_up_in_prod_gated_and_rolled_out_by_its_registry_id(
    envs: Environments, monkeypatch: pytest.MonkeyPatch
) -> None:
    import main
    from function_app import runtime
    from function_app.localhost import Host

    event = envs.promote_in_dev()
    assert event["source"] == WORKSPACE_ID and event["data"]["details"]["shared"]["id"] == REGISTRY_ID
    runtime.set_retrainer(envs.prod.worker)  # Event Grid delivers to the prod function (AzureFunction destination)
    try:
        url = "/runtime/webhooks/eventgrid?functionName=on_workspace_event"
        status, _, _ = Client(Host(main.app)).call("POST", url, event, {"aeg-event-type": "Notification"})
    finally:
        runtime.set_retrainer(None)
    assert status in (200, 202)
    [deploy] = envs.deploys_in_prod()
    assert deploy.outcome == "submitted", deploy.reason
    assert (deploy.details["gate"]["champion"], deploy.details["gate"]["candidate"]) == (0.52, 0.71)
    assert f"told by the upstream's promotion {event['data']['id']}" in deploy.reason
    assert REGISTRY_ID in _deployed_models(envs.prod).values()
    # read again from the registry, not taken from the event
    reads = [c for c in envs.prod.arm.calls if c.path.endswith(f"/models/{MODEL}/versions/4") and c.method == "GET"]
    assert reads


def test_prod_rolls_the_picked_up_version_through_its_own_rollout(envs: Environments) -> None:
    envs.prod.deliver(envs.promote_in_dev())
    prod = envs.prod
    prod.provisioned()
    report = prod.new_worker().reconcile()
    [rollout] = report.rollouts
    assert rollout["state"] in ("stepped", "baking", "waiting_for_traffic", "held"), rollout
    [deploy] = envs.deploys_in_prod()
    assert prod.flights()["rollout"].decision == deploy.id


def test_a_redelivered_notification_picks_the_version_up_once(envs: Environments) -> None:
    event = envs.promote_in_dev()
    first = envs.prod.deliver(event)
    again = envs.prod.deliver(copy.deepcopy(event))
    assert again.status == "duplicate" and [r.id for r in again.decisions] == [r.id for r in first.decisions]
    resent = {**copy.deepcopy(event), "id": "another-delivery-of-the-same-promotion"}
    [same] = envs.prod.deliver(resent).decisions
    assert same.id == first.decisions[0].id
    assert len(envs.deploys_in_prod()) == 1
    assert len([d for d in _deployed_models(envs.prod).values() if d == REGISTRY_ID]) == 1


def test_a_lost_notification_is_caught_by_polling_the_registry(envs: Environments) -> None:
    envs.promote_in_dev()  # Event Grid never delivers it
    report = envs.prod.new_worker().reconcile()
    [picked] = report.picked_up
    assert picked.outcome == "submitted", picked.reason
    assert "found by polling the registry" in picked.reason
    assert picked.trigger["channel"] == "reconciler"
    assert REGISTRY_ID in _deployed_models(envs.prod).values()
    assert envs.prod.new_worker().reconcile().picked_up == []  # the next pass finds it decided


def test_the_event_and_the_poll_both_pick_the_version_up_once(envs: Environments) -> None:
    event = envs.promote_in_dev()
    report = envs.prod.new_worker().reconcile()  # the poll first ...
    [by_event] = envs.prod.deliver(event).decisions  # ... then the event: answered with the poll's record
    assert [r.id for r in report.picked_up] == [by_event.id]
    assert len(envs.deploys_in_prod()) == 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"source": "/subscriptions/x/resourceGroups/y/providers/Microsoft.EventGrid/topics/other"},
            "is not the upstream",
        ),
        ({"source": WORKSPACE_ID.replace(WS, "ws-someone-else")}, "is not the upstream"),
        ({"registry": "theirs"}, "the policy reads registry"),
        ({"model": "another-model"}, "the policy has no model 'another-model'"),
    ],
)
def test_a_forged_or_foreign_notification_is_a_recorded_skip(
    envs: Environments, change: dict[str, str], says: str
) -> None:
    event = envs.promote_in_dev()
    forged = copy.deepcopy(event)
    forged["id"] = "forged-1"
    forged["source"] = change.get("source", event["source"])
    shared = forged["data"]["details"]["shared"]
    shared["id"] = (
        shared["id"]
        .replace(rbac.REGISTRY, change.get("registry", rbac.REGISTRY))
        .replace(f"/models/{MODEL}/", f"/models/{change.get('model', MODEL)}/")
    )
    [rec] = envs.prod.deliver(forged).decisions
    assert rec.outcome == "skipped" and says in rec.reason, rec.reason
    assert envs.prod.arm.writes() == []
    assert not [c for c in envs.prod.arm.calls if "registr" in c.path]  # nothing of it was read


def test_a_notification_of_a_version_the_registry_does_not_hold_yet_does_not_stop_its_pickup(
    envs: Environments,
) -> None:
    """Posted before dev shares version 4 (a forged source, a leaked key): recorded, and not final."""
    early = promotion_event(source=WORKSPACE_ID, registry=rbac.REGISTRY, version="4", event_id="forged-early")
    [skipped] = envs.prod.deliver(early).decisions
    assert skipped.outcome == "skipped" and "holds no version" in skipped.reason, skipped.reason
    assert skipped.details["guard"] == "not_in_registry" and envs.prod.arm.writes() == []
    [picked] = envs.prod.deliver(envs.promote_in_dev()).decisions
    assert (picked.id, picked.outcome) == (skipped.id, "submitted"), picked.reason
    assert REGISTRY_ID in _deployed_models(envs.prod).values()


def test_a_registry_version_whose_lineage_names_another_workspace_is_not_rolled_out(envs: Environments) -> None:
    registry = envs.dev.arm.registries
    registry.add_model(rbac.REGISTRY, MODEL, "9", tags={"r2_score": "0.99", "retrain_source_workspace": "/elsewhere"})
    event = envs.promote_in_dev()
    event["id"] = "forged-3"
    event["data"]["details"]["shared"]["id"] = REGISTRY_ID.replace("/versions/4", "/versions/9")
    [rec] = envs.prod.deliver(event).decisions
    assert rec.outcome == "skipped" and "not the upstream" in rec.reason, rec.reason
    [polled] = envs.prod.new_worker().reconcile().picked_up  # the poll takes the upstream's own newest: 4
    assert polled.details["rendered"]["candidate"]["version"] == "4"


def test_a_version_a_person_registered_with_the_upstreams_lineage_is_never_picked_up_and_the_skip_names_them(
    envs: Environments,
) -> None:
    """Anyone who can write the registry writes the lineage tag and the metrics; who created the version is
    the registry's record (systemData.createdBy), which they cannot choose."""
    lineage = {"r2_score": "0.99", "retrain_source_workspace": WORKSPACE_ID}
    envs.dev.arm.registries.add_model(rbac.REGISTRY, MODEL, "9", tags=lineage, by=USER_CLAIMS)
    [polled] = envs.prod.new_worker().reconcile().picked_up
    assert polled.outcome == "skipped" and USER_UPN in polled.reason, polled.reason
    assert "upstream_identity" in polled.reason and envs.prod.arm.writes() == []
    event = envs.promote_in_dev()  # told of 9 by a notification with the upstream's source: the same record
    event["id"], event["data"]["details"]["shared"]["id"] = (
        "forged-4",
        REGISTRY_ID.replace("/versions/4", "/versions/9"),
    )
    [told] = envs.prod.deliver(event).decisions
    assert (told.id, told.outcome) == (polled.id, "skipped") and REGISTRY_ID.replace("/4", "/9") not in str(
        _deployed_models(envs.prod)
    )
    [picked] = envs.prod.new_worker().reconcile().picked_up  # the upstream's own share, created later, is
    assert picked.outcome == "submitted" and picked.details["rendered"]["candidate"]["version"] == "4", picked.reason


def test_a_version_a_person_registers_after_the_upstreams_does_not_hide_it_from_the_poll(envs: Environments) -> None:
    """The notification of the upstream's version 4 is lost, then a person registers 9 with the upstream's
    lineage and better metrics: the next poll records 9's skip, which names them, and picks 4 up (before,
    the poll looked at the newest version with the lineage only, so 9 kept 4 from ever being picked up)."""
    envs.promote_in_dev()  # Event Grid never delivers it
    lineage = {"r2_score": "0.99", "retrain_source_workspace": WORKSPACE_ID}
    envs.dev.arm.registries.add_model(rbac.REGISTRY, MODEL, "9", tags=lineage, by=USER_CLAIMS)
    forged, picked = envs.prod.new_worker().reconcile().picked_up
    assert forged.details["rendered"]["candidate"]["version"] == "9"
    assert forged.outcome == "skipped" and USER_UPN in forged.reason, forged.reason
    assert picked.outcome == "submitted" and picked.details["rendered"]["candidate"]["version"] == "4", picked.reason
    assert list(_deployed_models(envs.prod).values()).count(REGISTRY_ID) == 1
    assert REGISTRY_ID.replace("/versions/4", "/versions/9") not in _deployed_models(envs.prod).values()
    assert envs.prod.new_worker().reconcile().picked_up == []  # each decided once


def test_a_version_worse_than_the_prod_champion_is_a_recorded_skip(envs: Environments) -> None:
    envs.prod.arm.models[(MODEL, "3")]["properties"]["tags"]["r2_score"] = "0.9"
    [rec] = envs.prod.deliver(envs.promote_in_dev()).decisions
    assert rec.outcome == "skipped" and "not rolled out" in rec.reason, rec.reason
    assert (rec.details["gate"]["champion"], rec.details["gate"]["candidate"]) == (0.9, 0.71)
    assert envs.prod.arm.writes() == []
    assert envs.prod.new_worker().reconcile().picked_up == []  # judged once: the poll leaves it


def test_a_version_of_a_registry_not_in_prod_s_region_is_recorded_failed_and_nothing_is_deployed(
    envs: Environments,
) -> None:
    event = envs.promote_in_dev()
    [registry] = envs.prod.arm.registries.registries.values()
    registry.region = "eastus"  # a registry prod's workspace (westeurope) is not in a region of
    [deploy] = envs.prod.deliver(event).decisions
    assert deploy.outcome == "failed" and "not available in that region" in deploy.reason, deploy.reason
    assert REGISTRY_ID not in _deployed_models(envs.prod).values() and "rollout" not in envs.prod.flights()


def test_a_version_met_while_a_rollout_is_in_flight_is_picked_up_by_a_later_poll(envs: Environments) -> None:
    prod = envs.prod
    [own] = prod.deliver(prod.finished_run(r2="0.6", run_id="retrain-prod-own-0001")).decisions
    assert own.outcome == "submitted", own.reason
    [refused] = prod.deliver(envs.promote_in_dev()).decisions
    assert refused.outcome == "skipped" and refused.details["guard"] == "in_flight"
    prod.provisioned()
    [waits] = prod.new_worker().reconcile().picked_up  # the poll meets the same rollout: still refused
    assert waits.id == refused.id and waits.details.get("guard") == "in_flight"
    prod.operator("rollback", "not this one")
    prod.provisioned()
    [picked] = prod.new_worker().reconcile().picked_up
    assert picked.id == refused.id and picked.outcome == "submitted", picked.reason
    assert REGISTRY_ID in _deployed_models(prod).values()


@pytest.mark.both_ledgers
def test_a_poll_whose_worker_dies_after_starting_the_deployment_is_finished_by_the_next_pass(
    envs: Environments,
) -> None:
    envs.promote_in_dev()  # the event is lost
    prod = envs.prod
    with pytest.raises(WorkerDied):
        prod.new_worker(DiesAfterActing(prod.actions)).reconcile()
    [started] = [name for (e, name), d in prod.arm.deployments.items() if d["properties"]["model"] == REGISTRY_ID]
    [reserved] = envs.deploys_in_prod()
    assert reserved.outcome == "reserved"
    assert prod.new_worker().reconcile().picked_up == []  # its reservation is the dead worker's until the lease ends
    prod.now.advance(minutes=2)
    report = prod.new_worker().reconcile()
    [resumed] = report.resumed
    assert (resumed.id, resumed.outcome, resumed.details.get("adopted")) == (reserved.id, "submitted", True)
    assert report.picked_up == []
    assert [n for (e, n), d in prod.arm.deployments.items() if d["properties"]["model"] == REGISTRY_ID] == [started]


def _registry_lists(world: AzureWorld) -> int:
    return sum(
        1
        for c in world.arm.calls
        if c.method == "GET" and c.path.endswith(f"/registries/{rbac.REGISTRY}/models/{MODEL}/versions")
    )


@pytest.mark.parametrize(("poll_every", "lists"), [(None, [1, 2, 3, 4]), ("30m", [1, 1, 1, 2])])
def test_the_registry_is_polled_on_every_pass_or_at_most_once_per_poll_every(
    tmp_path: Path, poll_every: str | None, lists: list[int]
) -> None:
    prod = AzureWorld(
        tmp_path, policy=with_environment({**DOWNSTREAM, **({"poll_every": poll_every} if poll_every else {})})
    )
    try:
        prod.serve_from_registry("7", {"r2_score": "0.66"})  # a version whose lineage names no upstream: not picked up
        seen = []
        for step in (0, 5, 20, 6):  # passes of one worker at 0, 5, 25 and 31 minutes
            prod.now.advance(minutes=step)
            assert prod.reconcile().picked_up == []
            seen.append(_registry_lists(prod))
        assert seen == lists
    finally:
        prod.close()
