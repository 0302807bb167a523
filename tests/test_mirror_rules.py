"""Azure ML's rules for mirror traffic, as the fake ARM enforces them and the adapter keeps them
(more than 50% mirrored, two mirrored deployments, one deployment live and mirrored: refused), and
the policy's ``deploy.rollout.mirror``: validated with errors that name the key and the fix, baked for
its own bake, sharing the rollout's error with the steps. The shadow stage itself: tests/test_mirror.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from handlers.analysis import COMPARISON_SHARE, step_alpha
from handlers.errors import PermanentError, PolicyError
from handlers.policy_file import parse_policy
from handlers.rollout_rules import MirrorRule
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.builders import EXAMPLE_POLICY


def endpoint_update(azure: AzureWorld, traffic: dict[str, int], mirror: dict[str, int]) -> None:
    """The SDK's own update of the endpoint, as a user of the workspace would send it."""
    ml = azure.actions.deployments.client.ml
    endpoint = ml.online_endpoints.get(ENDPOINT)
    endpoint.traffic, endpoint.mirror_traffic = traffic, mirror
    ml.online_endpoints.begin_create_or_update(endpoint)


@pytest.mark.parametrize(
    ("traffic", "mirror", "says"),
    [
        ({"blue": 100}, {"green": 51}, "at most 50"),
        ({"blue": 100}, {"green": 10, "red": 10}, "one deployment only"),
        ({"blue": 90, "green": 10}, {"green": 10}, "both live traffic"),
        ({"blue": 100}, {"gone": 10}, "does not exist"),
    ],
)
def test_the_fake_arm_refuses_what_azure_refuses_for_mirror_traffic(
    tmp_path: Path, traffic: dict[str, int], mirror: dict[str, int], says: str
) -> None:
    azure = AzureWorld(tmp_path)
    for name in ("green", "red"):
        azure.arm.add_deployment(ENDPOINT, name, model=(MODEL, "3"))
    with pytest.raises(HttpResponseError) as refused:
        endpoint_update(azure, traffic, mirror)
    assert refused.value.status_code == 400 and says in str(refused.value)
    assert azure.arm.endpoints[ENDPOINT]["properties"]["mirrorTraffic"] == {}
    endpoint_update(azure, {"blue": 100}, {"green": 50})  # what it allows
    assert azure.arm.endpoints[ENDPOINT]["properties"]["mirrorTraffic"] == {"green": 50}
    azure.close()


def test_the_adapter_never_asks_for_what_azure_refuses(tmp_path: Path) -> None:
    azure = AzureWorld(tmp_path)
    azure.arm.add_deployment(ENDPOINT, "green", model=(MODEL, "3"))
    deployments = azure.actions.deployments
    for traffic, mirror in (({"blue": 100}, {"green": 60}), ({"blue": 90, "green": 10}, {"green": 10})):
        with pytest.raises(PermanentError, match="Azure ML"):
            deployments.set_traffic(ENDPOINT, traffic, mirror)
    assert azure.arm.endpoint_puts == []  # refused here, nothing sent
    assert deployments.set_traffic(ENDPOINT, None, {"green": 20})
    azure.arm.finish_operations()
    # a mirrored deployment that goes live leaves the mirror: one request, which Azure accepts
    assert deployments.set_traffic(ENDPOINT, {"blue": 80, "green": 20})
    assert azure.arm.endpoint_puts[-1] == ({"blue": 80, "green": 20}, {})
    azure.close()


@pytest.mark.parametrize(
    ("mirror", "says"),
    [
        ("{percent: 51}", "mirror.percent: 51% is more than Azure ML mirrors (50% of an endpoint's traffic at most"),
        ("{percent: 0}", "mirror.percent: 0 mirrors nothing; write a percent from 1 to 50, or leave 'mirror' out"),
        ("{percent: ten}", "mirror.percent: 'ten' is not a percent; write a whole number from 1 to 50, e.g. 10"),
        ("{percent: 10, bake: 0s}", "mirror.bake: a shadow stage of 0s judges nothing; write a duration such as '10m'"),
        ("{percent: 10, bake: soon}", "mirror.bake: 'soon' is not a duration; write it like '6h'"),
        ("{bake: 5m}", "mirror.percent: it is required; add it"),
        ("{percent: 10, ratio: 2}", "mirror.ratio: unknown key; remove it or check its spelling"),
    ],
)
def test_a_bad_mirror_policy_names_the_key_and_the_fix(mirror: str, says: str) -> None:
    text = f"models:\n  m:\n    deploy:\n      endpoint: ep-one\n      rollout:\n        mirror: {mirror}\n"
    with pytest.raises(PolicyError) as bad:
        parse_policy(text)
    assert f"policy.yaml: models.m.deploy.rollout.{says}" in str(bad.value)


def test_a_mirror_policy_bakes_for_its_own_bake_or_the_rollout_s() -> None:
    rollout = "steps: [20, 100]\n        bake: 7m\n        mirror"
    text = "models:\n  m:\n    deploy:\n      endpoint: ep-one\n      rollout:\n        {}: {{percent: 50{}}}\n"
    own = parse_policy(text.format(rollout, ", bake: 3m")).models["m"].deploy
    default = parse_policy(text.format(rollout, "")).models["m"].deploy
    assert own is not None and default is not None
    assert own.rollout.mirror_stage().bake == timedelta(minutes=3) and own.rollout.mirror_stage().steps == [20, 100]
    assert default.rollout.mirror_stage().bake == timedelta(minutes=7)


def test_the_shadow_stage_takes_its_share_of_the_rollout_s_error() -> None:
    mp = EXAMPLE_POLICY.models[MODEL]
    assert mp.deploy is not None
    mirror = MirrorRule.model_validate({"percent": 10})
    rule = mp.deploy.rollout.model_copy(update={"mirror": mirror})  # [10, 50, 100]: three compared steps, one shadow
    without = rule.model_copy(update={"mirror": None})
    half = (1 - rule.health.confidence) * COMPARISON_SHARE  # the comparison's error, the last step a quarter share
    assert step_alpha(rule) == pytest.approx(half / 3.25)
    assert step_alpha(rule.mirror_stage()) == step_alpha(rule)
    assert step_alpha(without) == pytest.approx(half / 2.25)
