"""Each adapter operation runs holding only the actions its entry in function_app/adapters/permissions.py lists.

tests/test_permissions.py checks the entries against infra/ (every listed action granted, nothing granted that no
entry lists); here the entries are checked against what the operations do: each scenario drives operations through
the real SDKs and the fakes, the app's identity holding what infra/ assigns but, per request, only the actions of
the operation that makes it (tests/entry_watch.py). A request its entry does not cover is refused as Azure refuses
it, and the test names the operation and the action to add. The other way: an action an entry lists that its
operation did not ask for in its scenario is flagged, unless :data:`UNSEEN` says why no fake can see it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from function_app.adapters import permissions
from function_app.adapters.azureml import AzureMLActions
from function_app.adapters.azureml.batch import AzureMLBatch
from function_app.adapters.monitor_guards import MonitorGuards
from function_app.adapters.monitor_health import MonitorHealth
from function_app.adapters.monitor_metrics import MonitorMetrics
from tests.azure_world import AzureWorld
from tests.entry_scenarios import SCENARIOS
from tests.entry_watch import Watch, by_entry, follow_pollers, wrap
from tests.ledgers import LedgerSpec

AML = permissions.AML
WATCHED = (AzureMLActions, AzureMLBatch, MonitorHealth, MonitorMetrics, MonitorGuards)

W = f"{AML}/"  # an action of the workspace
# Actions an entry lists that no request of its operation is checked for by the fakes, each group with why. The
# list is exact: an action asked for again must leave it (the test says so), and a new one unasked must join it
# with a reason, or leave its entry.
_UNSEEN_GROUPS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    (
        "Azure ML checks them inside a job's submission, for what the job references (Manage roles, 'Submitting "
        "any type of run (V2)'); the fake answers the job's PUT alone. The data and model versions a job reads are "
        "pinned before its submission (AzureMLActions.latest_data, latest_model, handlers/pins.py), so the SDK "
        "resolves no label itself",
        ("AzureMLActions.submit_retrain",),
        tuple(
            W + a
            for a in (
                "metadata/artifacts/write",
                "environments/build/action",
                "environments/readSecrets/action",
                "environments/read",
                "environments/versions/read",
                "codes/read",
                "codes/versions/read",
                "computes/read",
                "components/read",
                "datastores/read",
                "data/read",
                "data/versions/read",
                "models/read",
                "models/versions/read",
            )
        ),
    ),
    (
        "Azure ML resolves the copied deployment's environment, code and compute inside the deployment's PUT, and "
        "a model version's PUT creates its model's container when there is none (the fake's containers exist)",
        ("AzureMLActions.start_deploy", "AzureMLBatch.start_deploy"),
        tuple(
            W + a
            for a in (
                "environments/read",
                "environments/versions/read",
                "codes/versions/read",
                "models/write",
                "computes/read",
            )
        ),
    ),
    (
        "a model version's PUT creates its model's container when there is none (the fake's containers exist)",
        ("AzureMLActions.share_promoted",),
        (W + "models/write",),
    ),
    (
        "an operation's status and result URLs: ARM answers them to the caller that started it; the fakes do "
        "not role-check them (tests/rbac.py)",
        ("AzureMLActions.set_traffic", "AzureMLActions.start_deploy"),
        (
            W + "onlineendpoints/operationsstatus/read",
            W + "onlineendpoints/operationresults/read",
            W + "onlineendpoints/deployments/operationsstatus/read",
            W + "onlineendpoints/deployments/operationresults/read",
        ),
    ),
    (
        "MLflow's runs/get and runs/search run over a run's experiment and job (Manage roles, 'MLflow operations', "
        "grants experiments/* for them); the fake checks experiments/runs/read, experiments/read for "
        "get-by-name only",
        (
            "AzureMLActions.candidate_facts",
            "AzureMLActions.find_deploy",
            "AzureMLActions.retrain_facts",
            "AzureMLActions.batch_run",
            "AzureMLBatch.candidate_facts",
            "AzureMLBatch.find_deploy",
        ),
        (W + "experiments/read",),
    ),
    (
        "a model's container (models.get by label, a registry's model): the scenarios read versions by name",
        (
            "AzureMLActions.candidate_facts",
            "AzureMLActions.champion",
            "AzureMLActions.find_deploy",
            "AzureMLActions.retrain_facts",
            "AzureMLActions.share_promoted",
            "AzureMLBatch.candidate_facts",
            "AzureMLBatch.find_deploy",
        ),
        (W + "models/read",),
    ),
    (
        "a resumed deploy reads its candidate as the gate's facts read it: one picked up from the policy's registry "
        "is read there (the downstream registry scenario shows it for candidate_facts); none is resumed here",
        ("AzureMLActions.find_deploy",),
        (f"{permissions.REGISTRIES}/read", f"{permissions.REGISTRIES}/assets/read"),
    ),
    (
        "the registry's discovery is read once per registry client, by whichever operation builds it first",
        ("AzureMLActions.candidate_facts", "AzureMLActions.registry_versions", "AzureMLActions.retrain_facts"),
        (f"{permissions.REGISTRIES}/read",),
    ),
    (
        "batch_endpoints.invoke with a deployment named: Azure checks the deployment's jobs/write (the endpoint's is "
        "for an invocation without one), and resolves the data asset's datastore inside the invocation; a job "
        "Azure did not name as asked is found through MLflow, which no scenario needs",
        ("AzureMLActions.invoke_batch",),
        (W + "batchEndpoints/jobs/write", W + "data/read", W + "datastores/read", W + "experiments/runs/read"),
    ),
    (
        "Log Analytics checks the workspace and the queried table's read (table-level access) inside the query; "
        "the fake checks query/read; an Application Insights component's query is a guard no scenario names",
        ("MonitorHealth.read", "MonitorGuards.value"),
        (
            "Microsoft.OperationalInsights/workspaces/read",
            "Microsoft.OperationalInsights/workspaces/query/AmlOnlineEndpointTrafficLog/read",
            "Microsoft.OperationalInsights/workspaces/query/*/read",
            "Microsoft.Insights/components/query/read",
        ),
    ),
]
UNSEEN: dict[str, dict[str, str]] = {}
for _why, _operations, _actions in _UNSEEN_GROUPS:
    for _op in _operations:
        for _action in _actions:
            if _action in permissions.OPERATIONS[_op]:
                UNSEEN.setdefault(_op, {})[_action] = _why
# ... and for every operation: the workspace is read once per worker, by whichever operation first needs the
# workspace's MLflow tracking URI or region, so each that may be first lists it.
UNSEEN_ANYWHERE = {f"{AML}/read"}


def run(scenario: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> Watch:
    """``scenario`` in a world of its own (in ``where``), its operations holding only their entries' actions."""
    where.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(where)  # not a git repository, as on Azure
    setup, operations, options = SCENARIOS[scenario]
    world = AzureWorld(where, LedgerSpec("sqlite", str(where / "ledger.db")), **options)
    watch = Watch()
    try:
        act = setup(world)
        with monkeypatch.context() as patch:
            for cls in WATCHED:
                wrap(patch, watch, cls)
            follow_pollers(patch, watch)
            identity = by_entry(world.arm.principal, watch)
            world.arm.principal = world.logs.principal = world.metrics.principal = identity
            world.actions.client.started -= 7200  # past the hour a new role takes: a refusal is one
            try:
                act()
            finally:  # an operation refused for want of an action its entry lacks fails the scenario: say which
                beyond = sorted({f"{op}: {action}" for op, action, _ in watch.beyond})
                assert beyond == [], (
                    "add these actions to the operation's entry in function_app/adapters/permissions.py (and to "
                    f"the role in infra/ that grants its like, if none does): {beyond}"
                )
    finally:
        world.close()
    assert world.arm.unexpected == []
    assert watch.ungranted == [], "infra/ grants the app none of these"
    assert watch.outside == [], f"requests no operation made: {sorted(set(watch.outside))}"
    assert sorted(set(operations) - watch.called) == [], "the scenario no longer runs these operations"
    return watch


@pytest.mark.sdk
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_operation_needs_only_the_actions_its_permissions_entry_lists(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(scenario, tmp_path, monkeypatch)


@pytest.mark.sdk
@pytest.mark.slow  # every scenario again, one after the other: the actions asked are counted over all of them
def test_no_entry_lists_an_action_its_operation_never_asks_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, set[str]] = {}
    for scenario in sorted(SCENARIOS):
        watch = run(scenario, tmp_path / scenario, monkeypatch)
        for op, actions in watch.asked.items():
            asked.setdefault(op, set()).update(actions)
    covered = {op for _, operations, _ in SCENARIOS.values() for op in operations}
    unused = {
        (op, a)
        for op in covered
        for a in permissions.OPERATIONS[op]
        if not any(permissions.matches(a, x) for x in asked.get(op, ())) and a not in UNSEEN_ANYWHERE
    }
    flagged = sorted(f"{op}: {a}" for op, a in unused if a not in UNSEEN.get(op, {}))
    assert flagged == [], (
        "these entries list actions their operation did not ask for in any scenario: remove them, or say in "
        f"UNSEEN why no fake sees them: {flagged}"
    )
    seen = sorted(f"{op}: {a}" for op, actions in UNSEEN.items() for a in actions if (op, a) not in unused)
    assert seen == [], f"asked for now: remove these from UNSEEN: {seen}"


# Operations that act in Azure yet run in no scenario here, and why.
_AZURITE = (
    "its storage is Azurite's, which authorizes by account key, not by role, so no fake checks these actions "
    "(tests/test_permissions.py checks that infra/'s built-in roles grant them)"
)
NOT_RUN: dict[str, str] = {
    "EventGridNotifier.publish": (
        "the topic is a real HTTPS server on a thread of its own (tests/topic_receiver.py), where no operation runs; "
        "tests/test_notifications.py publishes holding the roles infra/ assigns, and the entry is that one action"
    ),
    **{op: _AZURITE for op in permissions.OPERATIONS if op.split(".")[0] in ("TableLedger", "BlobDeadLetterStore")},
}


def test_every_operation_that_acts_in_azure_runs_in_a_scenario_or_says_why_not() -> None:
    acting = {op for op, actions in permissions.OPERATIONS.items() if actions}
    covered = {op for _, operations, _ in SCENARIOS.values() for op in operations}
    assert sorted(acting - covered - set(NOT_RUN)) == [], "add a scenario that runs these, or say in NOT_RUN why not"
    assert sorted(set(NOT_RUN) & covered) == [], "these run in a scenario now: remove them from NOT_RUN"
    assert sorted(op for op in covered if op.split(".")[0] not in {c.__name__ for c in WATCHED}) == []
