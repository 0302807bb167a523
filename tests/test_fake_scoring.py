"""The fake scoring URIs answer as Azure ML documents (tests/fake_scoring.py): a fake that said yes to
everything could not catch a wrong token audience, a missing scoring action or an unprovisioned candidate."""

from __future__ import annotations

from typing import Any

import requests

from tests.azure_world import ENDPOINT, RG, SUB, WS
from tests.fake_arm import FakeArm
from tests.fake_http import Answer, unsigned_jwt
from tests.fake_scoring import SCORE

URI = f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score"
BODY = {"data": [[1, 2, 3]]}


def arm() -> FakeArm:
    fake = FakeArm(SUB, RG, WS)
    fake.add_model("m", "1")
    fake.add_endpoint(ENDPOINT, {"blue": 100})
    fake.add_deployment(ENDPOINT, "blue", model=("m", "1"))
    fake.add_deployment(ENDPOINT, "green", model=("m", "1"))
    fake.scoring.aad(ENDPOINT)
    return fake


def post(fake: FakeArm, deployment: str | None = None, audience: str = "https://ml.azure.com", **claims: Any) -> Answer:
    headers = {"Authorization": f"Bearer {unsigned_jwt(audience, **claims)}"}
    if deployment is not None:
        headers["azureml-model-deployment"] = deployment
    return fake.answer(requests.Request("POST", URI, json=BODY, headers=headers).prepare())


def test_the_header_routes_to_a_deployment_without_traffic() -> None:
    fake = arm()
    status, _, body = post(fake, "green")
    assert (status, body) == (200, {"predictions": [6.0]})
    assert fake.scoring.to("green") == [BODY]


def test_without_the_header_the_request_follows_the_live_traffic() -> None:
    fake = arm()
    assert post(fake)[0] == 200 and fake.scoring.to("blue") == [BODY]
    fake.endpoints[ENDPOINT]["properties"]["traffic"] = {}
    status, _, body = post(fake)
    assert status == 404 and body["message"].startswith("No valid deployments to route to")


def test_an_unknown_or_unprovisioned_deployment_is_404() -> None:
    fake = arm()
    assert post(fake, "nope")[0] == 404
    fake.deployments[(ENDPOINT, "green")]["properties"]["provisioningState"] = "Creating"
    assert post(fake, "green")[0] == 404
    assert fake.scoring.calls == []


def test_a_token_for_another_audience_or_a_key_endpoint_is_401() -> None:
    fake = arm()
    assert post(fake, "green", audience="https://management.azure.com")[0] == 401
    fake.endpoints[ENDPOINT]["properties"]["authMode"] = "Key"
    assert post(fake, "green")[0] == 401
    assert fake.scoring.calls == []


def test_an_identity_without_the_scoring_data_action_is_401() -> None:
    fake = arm()
    assert post(fake, "green", oid="00000000-0000-0000-0000-0000000000ee")[0] == 401  # an identity with no role
    fake.principal = fake.principal.without(SCORE)
    assert post(fake, "green")[0] == 401
    assert fake.refused[-1] == (SCORE, fake.endpoints[ENDPOINT]["id"])
    assert fake.scoring.calls == []
