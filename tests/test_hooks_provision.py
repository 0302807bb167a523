"""The azd hooks before anything is deployed: preprovision and predeploy stop a deploy whose policy is
missing or invalid with the policy's own message, check what the workspace needs (public network access,
Event Grid registered), pass the deployment what the policy asks for (traffic logs, storage prefixes)
and generate the job-name key (:mod:`tests.hooks_world`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.hooks_world import SUB, VALID_POLICY, Project, hooklib


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_a_workspace_that_does_not_exist_stops_the_provision_with_what_to_check(project: Project) -> None:
    done = project.run("preprovision", AZUREML_WORKSPACE_NAME="ws-typo")
    assert done.returncode != 0
    assert "workspace ws-typo not found in resource group rg-ml" in done.stderr
    assert project.calls("az", "eventgrid") == []


def test_an_unset_workspace_name_says_which_azd_env_value_to_set(project: Project) -> None:
    env = dict(project.env)
    del env["AZUREML_WORKSPACE_NAME"]
    project.env = env
    done = project.run("preprovision")
    assert done.returncode != 0
    assert "AZUREML_WORKSPACE_NAME is not set; run: azd env set AZUREML_WORKSPACE_NAME" in done.stderr


@pytest.mark.parametrize("hook", ["predeploy", "preprovision"])
def test_a_missing_policy_stops_with_the_policys_message(project: Project, hook: str) -> None:
    done = project.run(hook, RETRAIN_POLICY_PATH="policies/prod.yaml")
    assert done.returncode != 0
    assert "policies/prod.yaml: cannot read the policy file (No such file or directory)" in done.stderr
    assert "azd env set RETRAIN_POLICY_PATH" in done.stderr
    assert project.calls("azd", "provision") == [] and project.calls("az", "eventgrid") == []


def test_an_invalid_policy_stops_the_deploy_with_the_key_and_the_fix(project: Project) -> None:
    (project.root / "policy.yaml").write_text(
        VALID_POLICY.replace("cooldown: 6h", "cooldown: soon", 1), encoding="utf-8"
    )
    done = project.run("predeploy")
    assert done.returncode != 0
    assert "policy.yaml: defaults.cooldown" in done.stderr, done.stderr
    assert "is not valid (above)" in done.stderr


def test_a_valid_policy_lets_the_deploy_go_on(project: Project) -> None:
    done = project.run("predeploy")
    assert done.returncode == 0, done.stderr
    assert "policy.yaml: valid; models: sklearn_regression_model, churn-classifier" in done.stdout


def test_a_policy_the_package_leaves_out_stops_the_deploy(project: Project) -> None:
    (project.root / "tests").mkdir()
    (project.root / "tests" / "policy.yaml").write_text(VALID_POLICY, encoding="utf-8")
    done = project.run("predeploy", RETRAIN_POLICY_PATH="tests/policy.yaml")
    assert done.returncode != 0
    assert "tests/policy.yaml is left out of the function package by the line 'tests/' of .funcignore" in done.stderr


def test_preprovision_passes_no_traffic_log_endpoints_for_a_policy_on_metrics(project: Project) -> None:
    assert project.run("preprovision").returncode == 0
    assert project.azd_env["RETRAIN_TRAFFIC_LOG_ENDPOINTS"] == ""
    assert project.azd_env["RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID"] == project.azd_env["RETRAIN_NEW_DATA_PREFIXES"] == ""


def test_preprovision_passes_the_storage_account_and_prefixes_the_policy_retrains_on(project: Project) -> None:
    account = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/mydata"
    blobs = f"        data:\n          blobs:\n            - {{account: '{account}', container: training, prefix: diabetes/}}\n"
    anchor = "      daily_budget: 3\n"
    (project.root / "policy.yaml").write_text(VALID_POLICY.replace(anchor, anchor + "      on:\n" + blobs, 1))
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    assert project.azd_env["RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID"] == account
    assert project.azd_env["RETRAIN_NEW_DATA_PREFIXES"] == "training/diabetes/"


def test_the_endpoints_of_models_whose_rollout_health_reads_logs_get_the_traffic_log() -> None:
    policy = {
        "models": {
            "a": {"deploy": {"endpoint": "ep-a", "rollout": {"health": {"source": "logs"}}}},
            "b": {"deploy": {"endpoint": "ep-b", "rollout": {"health": {"source": "metrics"}}}},
            "c": {"deploy": {"endpoint": "ep-c"}},
            "d": {"deploy": {"endpoint": "ep-a", "rollout": {"health": {"source": "logs"}}}},
            "e": {"retrain": {}},
        }
    }
    assert hooklib.logs_endpoints(policy) == ["ep-a"]


@pytest.mark.parametrize(
    ("path", "excluded"),
    [("policy.yaml", None), ("policies/prod.yaml", None), ("tests/p.yaml", "tests/"), ("infra/p.yaml", "infra/")],
)
def test_funcignore_lines_are_matched_as_gitignore_matches_them(path: str, excluded: str | None) -> None:
    assert hooklib.excluded_by(path, (REPO / ".funcignore").read_text(encoding="utf-8")) == excluded


def test_a_workspace_without_public_network_access_is_refused_with_what_to_do(project: Project) -> None:
    project.world["workspace"]["properties"]["publicNetworkAccess"] = "Disabled"
    done = project.run("preprovision")
    assert done.returncode != 0
    assert "the workspace ws1 has public network access disabled" in done.stderr
    assert "--public-network-access Enabled" in done.stderr
    assert "azd env set RETRAIN_ALLOW_PRIVATE_WORKSPACE true" in done.stderr
    assert project.calls("az", "eventgrid") == []
    allowed = project.run("preprovision", RETRAIN_ALLOW_PRIVATE_WORKSPACE="true")
    assert allowed.returncode == 0, allowed.stderr
    assert "public network access disabled; RETRAIN_ALLOW_PRIVATE_WORKSPACE=true" in allowed.stdout


def test_event_grid_is_registered_in_the_workspace_subscription_before_topics_are_listed(project: Project) -> None:
    project.world["providers"] = {"Microsoft.EventGrid": "NotRegistered"}
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    assert "registering the resource provider Microsoft.EventGrid in subscription" in done.stdout
    calls = [c for c in project.world["calls"] if c[0] == "az"]
    register = calls.index(
        ["az", "provider", "register", "--namespace", "Microsoft.EventGrid", "--subscription", SUB, "--wait"]
    )
    listing = next(i for i, c in enumerate(calls) if c[1:4] == ["eventgrid", "system-topic", "list"])
    assert register < listing
    assert project.world["providers"]["Microsoft.EventGrid"] == "Registered"


def test_an_unregistered_event_grid_that_cannot_be_registered_stops_with_the_command(project: Project) -> None:
    project.world.update(providers={"Microsoft.EventGrid": "NotRegistered"}, register_fails=True)
    done = project.run("preprovision")
    assert done.returncode != 0
    assert f"az provider register --namespace Microsoft.EventGrid --subscription {SUB} --wait" in done.stderr
    assert project.calls("az", "eventgrid") == []


def test_preprovision_generates_the_job_name_key_once_and_never_prints_it(project: Project) -> None:
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    key = project.azd_env["RETRAIN_JOB_NAME_KEY"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key not in done.stdout and key not in done.stderr
    assert "generated RETRAIN_JOB_NAME_KEY" in done.stdout

    project.world["env"] = {}
    again = project.run("preprovision", RETRAIN_JOB_NAME_KEY=key)  # azd passes the environment's values
    assert again.returncode == 0, again.stderr
    assert "RETRAIN_JOB_NAME_KEY" not in project.azd_env  # kept: a new key would not find jobs in progress
