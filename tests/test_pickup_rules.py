"""The pure rules of a downstream environment's pickup (handlers/pickup.py, issue 25): what an upstream
promotion notification becomes, whose notification counts, one decision per registry version whoever
tells of it, which version a poll takes, the policy keys, each refused naming the key and the fix, and
what a model's view shows of its environment."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.envelopes import parse_body, to_signal
from handlers.errors import PolicyError
from handlers.gate import judge
from handlers.pickup import RegistryVersionInfo, newest, not_shared_by_upstream, on_registry_version, to_poll
from handlers.plans import Deploy, Skip
from handlers.policy import Policy
from handlers.policy_file import parse_policy
from handlers.signals import RECONCILER_CHANNEL, Ignored, RegistryVersion, Trigger
from handlers.workspace_ports import CandidateFacts
from tests.builders import MODEL, WORKSPACE, promotion_event, with_environment

UPSTREAM = WORKSPACE.replace("/workspaces/", "/workspaces/dev-")  # the dev workspace, not this one
DEV_CLIENT_ID, DEV_OBJECT_ID = "0a1b2c3d-0000-4000-8000-00000000000c", "0a1b2c3d-0000-4000-8000-00000000000d"
DEV_IDENTITY = {"upstream_identity": [DEV_CLIENT_ID, DEV_OBJECT_ID]}  # the dev service's managed identity


def _policy(**environment: Any) -> Policy:
    identity = DEV_IDENTITY if "upstream" in environment else {}
    policy: Policy = with_environment({"registry": "mlreg-shared", "role": "downstream", **identity, **environment})
    return policy


def _signal(raw: dict[str, Any]) -> Any:
    [env] = parse_body(json.dumps([raw]))
    return to_signal(env)


def test_a_promotion_notification_names_the_registry_version_it_shared() -> None:
    signal = _signal(promotion_event(source=UPSTREAM))
    assert isinstance(signal, RegistryVersion)
    assert (signal.registry, signal.model, signal.version, signal.promotion) == ("mlreg-shared", MODEL, "4", "pr-0123")
    assert signal.trigger.source == UPSTREAM


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({**promotion_event(), "type": "retrain.decision.rollback.submitted"}, "only its promotions"),
        (promotion_event(outcome="failed"), "was not shared into a registry"),
        (promotion_event(registry="../../etc"), "is not a registry model version"),
    ],
)
def test_other_notifications_and_promotions_not_shared_are_recorded_not_acted_on(
    raw: dict[str, Any], says: str
) -> None:
    signal = _signal(raw)
    assert isinstance(signal, Ignored) and says in signal.reason


def test_the_upstreams_notification_and_the_poll_make_one_decision_for_one_version() -> None:
    policy = _policy(upstream=UPSTREAM)
    [by_event] = on_registry_version(_signal(promotion_event(source=UPSTREAM)), policy)
    [again] = on_registry_version(_signal(promotion_event(source=UPSTREAM, event_id="another")), policy)
    poll = Trigger(
        "azureml://registries/mlreg-shared", f"{MODEL}/4", "RegistryVersion.poll", channel=RECONCILER_CHANNEL
    )
    [by_poll] = on_registry_version(RegistryVersion(poll, "mlreg-shared", MODEL, "4"), policy)
    assert isinstance(by_event, Deploy) and isinstance(by_poll, Deploy)
    assert by_event.id == again.id == by_poll.id
    assert by_event.plan.source == "registry" and by_event.plan.keyed
    assert (by_event.plan.registry, by_event.plan.version, by_event.plan.upstream) == ("mlreg-shared", "4", UPSTREAM)
    [next_version] = on_registry_version(_signal(promotion_event(source=UPSTREAM, version="5")), policy)
    assert next_version.id != by_event.id


@pytest.mark.parametrize(
    ("policy", "raw", "says"),
    [
        (_policy(upstream=UPSTREAM), promotion_event(source=WORKSPACE), "is not the upstream the policy names"),
        (_policy(upstream=UPSTREAM), promotion_event(source=UPSTREAM, registry="theirs"), "reads registry"),
        (_policy(upstream=UPSTREAM), promotion_event(source=UPSTREAM, model="other"), "has no model 'other'"),
        (_policy(), promotion_event(source=UPSTREAM), f"models.{MODEL}.environment names no upstream"),
    ],
)
def test_a_notification_the_policy_does_not_name_is_a_skip_that_says_why(
    policy: Policy, raw: dict[str, Any], says: str
) -> None:
    [decision] = on_registry_version(_signal(raw), policy)
    assert isinstance(decision, Skip) and says in decision.reason


def test_the_poll_takes_the_newest_version_the_upstream_shared() -> None:
    lineage = {"retrain_source_workspace": UPSTREAM.upper()}  # resource ids compare case-insensitively
    versions = [
        RegistryVersionInfo("3", "2026-11-20T09:01:00", lineage),
        RegistryVersionInfo("10", "2026-11-20T09:03:00", lineage),
        RegistryVersionInfo("11", "2026-11-20T09:04:00", {"retrain_source_workspace": "/elsewhere"}),
        RegistryVersionInfo("12", "2026-11-20T09:05:00", {}),
    ]
    found = newest(versions, UPSTREAM)
    assert found is not None and found.version == "10"
    assert newest(versions[2:], UPSTREAM) is None


def test_the_poll_decides_the_newest_version_the_upstream_created_and_a_newer_one_someone_else_did() -> None:
    """A version a person registers with the upstream's lineage after the upstream shared one hides it no
    more: both are decided (the person's a recorded skip that names them), the person's first; one the
    person registered before the upstream's newest is left alone, and so is every older one."""
    lineage = {"retrain_source_workspace": UPSTREAM}
    ours = {"created_by": DEV_CLIENT_ID, "created_by_type": "ManagedIdentity"}
    person = {"created_by": "mallory@contoso.com", "created_by_type": "User"}
    v3 = RegistryVersionInfo("3", "2026-11-20T09:01:00", lineage, **ours)
    v4 = RegistryVersionInfo("4", "2026-11-20T09:02:00", lineage, **ours)
    v8 = RegistryVersionInfo("8", "2026-11-20T09:03:00", lineage, **person)
    v9 = RegistryVersionInfo("9", "2026-11-20T09:04:00", lineage, **person)
    v10 = RegistryVersionInfo("10", "2026-11-20T09:05:00", {}, **person)  # no lineage: not the upstream's
    identity = DEV_IDENTITY["upstream_identity"]
    assert to_poll([v3, v9, v4, v8, v10], UPSTREAM, identity, MODEL) == [v9, v4]
    v5 = RegistryVersionInfo(
        "5", "2026-11-20T09:06:00", lineage, created_by=DEV_OBJECT_ID, created_by_type="Application"
    )
    assert to_poll([v3, v4, v8, v9, v5], UPSTREAM, identity, MODEL) == [v5]  # shared after them: they are older
    assert to_poll([v8, v9, v10], UPSTREAM, identity, MODEL) == [v9]  # nothing the upstream shared: the skip
    assert to_poll([v3, v4, v9], UPSTREAM, [], MODEL) == [
        v9
    ]  # no identity to tell them by: the newest (its skip says so)
    assert to_poll([v10], UPSTREAM, identity, MODEL) == []


def test_a_candidate_that_is_not_one_to_judge_is_skipped_before_any_metric() -> None:
    facts = CandidateFacts("m:4 of registry r", None, {}, candidate_unreadable="not rolled out: not from the upstream")
    verdict = judge(None, facts)
    assert (verdict.next, verdict.why) == ("skip", "not rolled out: not from the upstream")


def _problems(model: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump({"models": {"churn": model}}), "policy.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("environment", "deploy", "says"),
    [
        (
            {"role": "downstream", "upstream": "ws-dev"},
            {"endpoint": "churn-ep"},
            "not an Azure ML workspace's resource id",
        ),
        ({"role": "upstream", "upstream": UPSTREAM, **DEV_IDENTITY}, {"endpoint": "churn-ep"}, "with role upstream"),
        ({"role": "downstream", "upstream": UPSTREAM, **DEV_IDENTITY}, None, "add deploy"),
        (
            {"role": "downstream", "upstream": UPSTREAM, **DEV_IDENTITY},
            {"batch_endpoint": {"name": "churn-batch"}},
            "batch endpoint",
        ),
        ({"role": "downstream", "poll_every": "15m"}, {"endpoint": "churn-ep"}, "remove poll_every, or set upstream"),
        (
            {"role": "downstream", "upstream": UPSTREAM},
            {"endpoint": "churn-ep"},
            "upstream_identity is required with upstream",
        ),
        (
            {"role": "downstream", "upstream": UPSTREAM, "upstream_identity": "id-retrain-dev"},
            {"endpoint": "churn-ep"},
            "is not an identity's id",
        ),
        (
            {"role": "downstream", "upstream": UPSTREAM, "upstream_identity": []},
            {"endpoint": "churn-ep"},
            "at least one",
        ),
        ({"role": "downstream", **DEV_IDENTITY}, {"endpoint": "churn-ep"}, "remove upstream_identity, or set upstream"),
    ],
)
def test_an_upstream_the_service_cannot_pick_up_from_is_refused_naming_the_key_and_the_fix(
    environment: dict[str, Any], deploy: dict[str, Any] | None, says: str
) -> None:
    model: dict[str, Any] = {
        "retrain": {"pipeline": "churn-train:3"},
        "environment": {"registry": "mlreg", **environment},
    }
    if deploy is not None:
        model["deploy"] = deploy
    [problem] = _problems(model)
    assert "models.churn" in problem and says in problem, problem
    assert "upstream" in problem


@pytest.mark.parametrize(
    ("poll_every", "says"),
    [("30s", "must be from 1m to 1d, e.g. '15m'"), ("2d", "must be from 1m to 1d"), ("soon", "is not a duration")],
)
def test_a_registry_poll_interval_out_of_range_is_refused_naming_the_key_and_the_fix(
    poll_every: str, says: str
) -> None:
    environment = {
        "registry": "mlreg",
        "role": "downstream",
        "upstream": UPSTREAM,
        "poll_every": poll_every,
        **DEV_IDENTITY,
    }
    [problem] = _problems(
        {"retrain": {"pipeline": "churn-train:3"}, "deploy": {"endpoint": "churn-ep"}, "environment": environment}
    )
    assert problem.startswith("policy.yaml: models.churn.environment.poll_every: ") and says in problem, problem


def test_the_upstream_identity_may_be_one_id_and_is_compared_in_lower_case() -> None:
    policy = _policy(upstream=UPSTREAM, upstream_identity=DEV_CLIENT_ID.upper())
    assert policy.models[MODEL].environment.upstream_identity == [DEV_CLIENT_ID]


@pytest.mark.parametrize(
    ("created_by", "created_by_type", "says"),
    [
        (DEV_CLIENT_ID, "ManagedIdentity", None),  # the upstream service's identity, by its client id
        (DEV_OBJECT_ID.upper(), "Application", None),  # by its object id, as an application
        ("mallory@contoso.example", "User", "records mallory@contoso.example (User) as its creator"),
        (DEV_CLIENT_ID, "User", "(User) as its creator"),  # a person is never the service, whatever the name
        ("0a1b2c3d-0000-4000-8000-0000000000ee", "ManagedIdentity", "not the upstream service's identity"),
        ("", "", "records no one (no type) as its creator"),
    ],
)
def test_a_registry_version_counts_as_the_upstreams_only_when_the_registry_records_its_identity_as_creator(
    created_by: str, created_by_type: str, says: str | None
) -> None:
    why = not_shared_by_upstream(created_by, created_by_type, [DEV_CLIENT_ID, DEV_OBJECT_ID], MODEL)
    assert why is None if says is None else (why is not None and says in why and "upstream_identity" in why), why


def test_a_registry_version_is_not_the_upstreams_when_the_policy_names_no_identity() -> None:
    why = not_shared_by_upstream(DEV_CLIENT_ID, "ManagedIdentity", [], MODEL)
    assert why is not None and f"models.{MODEL}.environment.upstream_identity" in why


def test_a_registry_poll_interval_is_read_as_a_duration() -> None:
    assert _policy(upstream=UPSTREAM, poll_every="1h30m").models[MODEL].environment.poll_every == timedelta(minutes=90)


def test_a_registry_version_is_not_the_workspace_version_of_the_same_number() -> None:
    from handlers.workspace_ports import ModelVersion

    registry = ModelVersion(MODEL, "4", f"azureml://registries/mlreg-shared/models/{MODEL}/versions/4")
    workspace = ModelVersion(MODEL, "4", f"{WORKSPACE}/models/{MODEL}/versions/4")
    live = f"{WORKSPACE}/onlineEndpoints/e/deployments/blue"
    facts = CandidateFacts(str(registry.label), registry, {}, live_deployment=live, champion_version=workspace)
    assert judge(None, facts).next == "deploy"
    same = CandidateFacts(str(registry.label), registry, {}, live_deployment=live, champion_version=registry)
    assert judge(None, same).next == "skip" and "already live" in judge(None, same).why


def test_a_prod_model_s_view_names_its_upstream_and_the_identity_whose_versions_it_takes(tmp_path: Path) -> None:
    """What GET /api/models and the console's card show of a downstream environment: the registry, the
    upstream it picks versions up from, how often it polls, and the dev service's identity (its client id
    and object id) the registry must record as a version's creator, for an operator to check against dev's."""
    from tests.ledgers import LedgerSpec
    from tests.world import World

    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=_policy(upstream=UPSTREAM, poll_every="15m"))
    [view] = [m for m in world.worker.models() if m["model"] == MODEL]
    assert view["environment"] == {
        "registry": "mlreg-shared",
        "role": "downstream",
        "upstream": UPSTREAM,
        "upstream_identity": [DEV_CLIENT_ID, DEV_OBJECT_ID],
        "poll_every": "15m",
    }
    plain = World(LedgerSpec("sqlite", str(tmp_path / "2.db")), policy=_policy())
    [view] = [m for m in plain.worker.models() if m["model"] == MODEL]
    assert view["environment"] == {"registry": "mlreg-shared", "role": "downstream"}  # no upstream: nothing to name
