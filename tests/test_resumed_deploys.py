"""A deploy resumed after its worker died (a redelivery of its event, or the reconciler once the lease ran out)
whose candidate deployment that worker had started: the deployment is adopted and recorded ``submitted`` before
anything is judged again.

The worker passed the gate and asked no approval (or had it) before it started the deployment; what changed since
(the endpoint's live deployment now serves a better champion, an approval the policy now asks for) does not undo a
deployment that exists at 0% beside the live one. Judged again, the resumed deploy was recorded ``skipped`` or
``pending`` and its rollout slot freed while its candidate deployment stood: a second deploy could start beside it,
and the reconciler no longer followed a rollout of it. A resumed deploy whose deployment does not exist goes on as
a first delivery does: judged, then started.

The real Azure ML SDK against the fake ARM, on each ledger: what stands after a crash is what the ledger kept.
"""

from __future__ import annotations

import pytest

from handlers.policy import Policy
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.builders import EXAMPLE_POLICY
from tests.crashes import DiesAfterActing, DiesBeforeActing, WorkerDied, resumed

pytestmark = pytest.mark.both_ledgers  # crash points: what each ledger keeps when a worker dies between two writes

DEPLOYMENTS = rf"^onlineEndpoints/{ENDPOINT}/deployments/"


def changes(azure: AzureWorld, what: str) -> None:
    """What changes while the dead worker's candidate deployment stands: the live deployment now serves a champion
    the candidate (r2 0.61) does not beat, or the policy now asks for an approval of the model's deploys."""
    if what == "champion":
        azure.arm.add_model(MODEL, "9", tags={"r2_score": "0.9"})
        azure.arm.deployments[(ENDPOINT, "blue")]["properties"]["model"] = azure.arm.arm_id(
            "models", MODEL, "versions", "9"
        )
    else:
        raw = EXAMPLE_POLICY.model_dump()
        raw["models"][MODEL]["deploy"]["approval"] = {"required": True, "expires": "24h"}
        azure.policy = Policy.model_validate(raw)


def candidates(azure: AzureWorld) -> list[str]:
    return sorted(d for (e, d) in azure.arm.deployments if e == ENDPOINT and d != "blue")


@pytest.mark.parametrize("by", ["redelivery", "reconciler"])
@pytest.mark.parametrize("what", ["champion", "approval"])
def test_a_resumed_deploy_whose_deployment_stands_adopts_it_though_it_would_not_be_started_now(
    azure: AzureWorld, what: str, by: str
) -> None:
    raw = azure.finished_run(r2="0.61")
    with pytest.raises(WorkerDied):  # registered and started the candidate, then died before recording it
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    [started] = candidates(azure)
    changes(azure, what)
    puts = len(azure.arm.requests_to("PUT", DEPLOYMENTS))
    assert puts >= 1  # the dead worker's creation

    rec = resumed(azure, raw, by)

    assert (rec.action, rec.outcome) == ("deploy", "submitted"), rec.reason
    assert (rec.job["name"], rec.details["adopted"]) == (f"{ENDPOINT}/{started}", True)  # type: ignore[index]
    assert rec.details["rendered"]["deployment"] == started
    assert "gate" not in rec.details and "approval" not in rec.details  # nothing judged or asked again
    assert candidates(azure) == [started] and len(azure.arm.requests_to("PUT", DEPLOYMENTS)) == puts
    assert len(azure.arm.requests_to("PUT", r"^models/")) == 1  # registered once, by the dead worker
    ledger = azure.ledger_spec.open()
    assert ledger.get_decision(rec.id) == rec
    flight = ledger.get_model(MODEL).flights["rollout"]
    assert (flight.decision, flight.status) == (rec.id, "submitted")  # the slot stays with the deployment

    azure.provisioned()
    [moved] = azure.new_worker().reconcile().rollouts  # the rollout goes on from the deployment that stands
    assert (moved["decision"], moved["state"], moved["deployment"]) == (rec.id, "stepped", f"{ENDPOINT}/{started}")
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {started: 10, "blue": 90}, moved


@pytest.mark.parametrize("by", ["redelivery", "reconciler"])
def test_a_resumed_deploy_whose_worker_died_before_starting_is_judged_again_as_a_first_delivery_is(
    azure: AzureWorld, by: str
) -> None:
    raw = azure.finished_run(r2="0.61")
    with pytest.raises(WorkerDied):  # reserved, then died before anything reached Azure ML
        azure.deliver(raw, azure.new_worker(DiesBeforeActing(azure.actions)))
    changes(azure, "champion")

    rec = resumed(azure, raw, by)

    assert (rec.outcome, rec.details["gate"]["passed"]) == ("skipped", False), rec.reason
    assert candidates(azure) == [] and azure.arm.requests_to("PUT", r"^models/") == []
    assert "rollout" not in azure.ledger_spec.open().get_model(MODEL).flights


def test_a_first_delivery_looks_its_deployment_up_once_as_it_starts_it(azure: AzureWorld) -> None:
    """The look for a deployment before the gate is a resumed deploy's alone: a first delivery's one look-up is its
    start's own (a deployment of its name met there is adopted as before)."""
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "submitted" and "adopted" not in rec.details, rec.reason
    [started] = candidates(azure)
    looked = [c.method for c in azure.arm.calls if c.path == f"onlineEndpoints/{ENDPOINT}/deployments/{started}"]
    assert looked[:2] == ["GET", "PUT"], looked
