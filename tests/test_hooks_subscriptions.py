"""postdeploy and the event subscriptions: RETRAIN_EVENT_SUBSCRIPTIONS is left true only once the
subscriptions exist, so that running again after any failure converges; the hooks target the workspace's
and the app's subscriptions whatever ``az`` defaults to (:mod:`tests.hooks_world`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.hooks_world import NAMES, SUB, WORKSPACE_ID, Project, portal_topic

ML_SUB = "00000000-0000-0000-0000-0000000000ml"
APP_SUB = "00000000-0000-0000-0000-00000000app0"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def deployed(project: Project, **world: Any) -> Project:
    """After the first provision and deploy: the topic exists without subscriptions, the code is deployed."""
    project.world.update({"topics": [project.world["created_topic"]], "functions": ["on_workspace_event"]})
    project.world.update(world)
    project.env.update(
        {
            "AZURE_RESOURCE_GROUP": "rg-test",
            "AZURE_FUNCTION_APP_NAME": "func-retrain-abc",
            "RETRAIN_SYSTEM_TOPIC_NAME": "evgt-ws1",
            "RETRAIN_EVENT_SUBSCRIPTION_NAMES": ",".join(NAMES),
            "RETRAIN_INDEX_INTERVAL": "0",
            "RETRAIN_INDEX_ATTEMPTS": "3",
        }
    )
    return project


def test_the_first_deploy_provisions_the_subscriptions_and_only_then_marks_them(project: Project) -> None:
    deployed(project)
    done = project.run("postdeploy")
    assert done.returncode == 0, done.stderr
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES
    assert project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"] == "true"
    assert len(project.calls("azd", "provision")) == 1
    shows = [i for i, c in enumerate(project.world["calls"]) if c[1:4] == ["functionapp", "function", "show"]]
    provision = next(i for i, c in enumerate(project.world["calls"]) if c[:2] == ["azd", "provision"])
    assert shows and shows[-1] < provision  # indexed before Event Grid validates the destination


def test_a_failed_provision_leaves_the_flag_unset_and_the_next_run_converges(project: Project) -> None:
    deployed(project, provision_fails=True)
    done = project.run("postdeploy")
    assert done.returncode != 0
    assert "RETRAIN_EVENT_SUBSCRIPTIONS is false again" in done.stderr
    assert project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"] == "false"
    assert project.world["event_subscriptions"] == {}
    # azd passes the environment's values to the hook: the next run sees the flag the last one left.
    project.world["provision_fails"] = False
    done = project.run("postdeploy", RETRAIN_EVENT_SUBSCRIPTIONS=project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"])
    assert done.returncode == 0, done.stderr
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES
    assert project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"] == "true"


def test_a_flag_left_true_by_an_interrupted_run_does_not_hide_missing_subscriptions(project: Project) -> None:
    deployed(project)
    done = project.run("postdeploy", RETRAIN_EVENT_SUBSCRIPTIONS="true")
    assert done.returncode == 0, done.stderr
    assert len(project.calls("azd", "provision")) == 1
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES


def test_the_hook_waits_for_the_function_to_be_indexed_before_provisioning(project: Project) -> None:
    deployed(project, index_after=2)
    done = project.run("postdeploy")
    assert done.returncode == 0, done.stderr
    assert "waiting for on_workspace_event to be indexed" in done.stdout
    assert len(project.calls("az", "functionapp", "function", "show")) == 3


def test_a_function_never_indexed_stops_before_event_grid_refuses_the_destination(project: Project) -> None:
    deployed(project, functions=[])
    done = project.run("postdeploy")
    assert done.returncode != 0
    assert "on_workspace_event is not indexed on func-retrain-abc after 3 checks" in done.stderr
    assert project.calls("azd", "provision") == []
    assert project.azd_env.get("RETRAIN_EVENT_SUBSCRIPTIONS") != "true"


def test_with_the_subscriptions_in_place_a_deploy_changes_nothing(project: Project) -> None:
    deployed(project, event_subscriptions={"evgt-ws1": NAMES})
    done = project.run("postdeploy", RETRAIN_EVENT_SUBSCRIPTIONS="true")
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout
    assert project.calls("azd") == []


def test_ci_skips_the_subscriptions_without_calling_azure(project: Project) -> None:
    done = project.run("postdeploy", RETRAIN_SKIP_EVENT_SUBSCRIPTIONS="true")
    assert done.returncode == 0, done.stderr
    assert project.world.get("calls", []) == []


def _untargeted(project: Project) -> list[list[str]]:
    """az calls that rely on the account's default subscription (no --subscription, no --ids)."""
    return [
        c
        for c in project.calls("az")
        if c[:2] != ["account", "show"] and "--subscription" not in c and "--ids" not in c
    ]


def test_preprovision_targets_the_workspace_subscription_whatever_az_defaults_to(project: Project) -> None:
    project.world.update(subscription=ML_SUB, account_subscription="someone-elses-default")
    project.world["workspace"]["id"] = WORKSPACE_ID.replace(SUB, ML_SUB)
    project.world["topics"] = [portal_topic(source=WORKSPACE_ID.replace(SUB, ML_SUB))]
    done = project.run("preprovision", AZUREML_SUBSCRIPTION_ID=ML_SUB, AZURE_SUBSCRIPTION_ID=APP_SUB)
    assert done.returncode == 0, done.stderr
    assert project.azd_env["RETRAIN_SYSTEM_TOPIC_NAME"] == "ws1-events"
    assert _untargeted(project) == []


def test_postdeploy_targets_the_app_and_workspace_subscriptions_whatever_az_defaults_to(project: Project) -> None:
    deployed(project, subscription=ML_SUB, app_subscription=APP_SUB, account_subscription="someone-elses-default")
    done = project.run("postdeploy", AZUREML_SUBSCRIPTION_ID=ML_SUB, AZURE_SUBSCRIPTION_ID=APP_SUB)
    assert done.returncode == 0, done.stderr
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES
    assert _untargeted(project) == []
    (show, *_) = project.calls("az", "functionapp", "function", "show")
    assert show[show.index("--subscription") + 1] == APP_SUB
