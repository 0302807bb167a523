"""The scoring data plane of the fake workspace's managed online endpoints: ``POST <scoringUri>`` (host
``<endpoint>.<region>.inference.ml.azure.com``, path ``/score``), answered from the endpoints and
deployments the fake ARM keeps (:class:`tests.fake_arm.FakeArm` routes the host here).

What it checks, as Azure ML documents it:

- who calls ("Authenticate clients for online endpoints"): an endpoint whose ``authMode`` is
  ``AADToken`` takes a Microsoft Entra token whose audience is ``https://ml.azure.com``, from an identity
  that holds the action ``Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action``
  at the endpoint (its roles read from infra/, tests/rbac.py; a "data plane" action in Azure ML's words
  that roles grant under ``actions``: AzureML Data Scientist's ``workspaces/*/action``); ``Key`` and ``AMLToken`` endpoints take a
  key or an endpoint token, which no Entra token is. Refused: 401 ("Troubleshoot online endpoints", HTTP
  status codes: 401 when the caller may not score or its token is wrong).
- where it goes: the ``azureml-model-deployment`` header names the deployment ("Safe rollout for online
  endpoints"), which must exist and be provisioned (``Succeeded``), else 404; without the header the
  request follows the live traffic, and an endpoint with none answers 404 ("No valid deployments to route
  to"). Unverified: the exact error bodies (the service reads only the status).
- the answer: each deployment answers as a test set it (:meth:`FakeScoring.answer_with`), by default
  healthily: ``{"predictions": [...]}``, the sum of each row of the request's ``data``. A model that
  fails is answered 424 with its status in ``ms-azureml-model-error-statuscode``, as the endpoint does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tests.fake_http import Answer, Refusal, Unexpected, token_audience, token_claims

if TYPE_CHECKING:
    from tests.fake_arm import FakeArm
    from tests.fake_arm_common import Call

SCORE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action"
AUDIENCE = "https://ml.azure.com"
HOST_SUFFIX = ".inference.ml.azure.com"
Behaviour = Callable[[Any], Answer]


def predictions(body: Any, scale: float = 1.0) -> list[float]:
    """A regression model's answer to ``{"data": [[...], ...]}``: each row's sum (times ``scale``)."""
    rows = body.get("data") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        return []
    return [round(scale * sum(float(x) for x in row), 6) for row in rows if isinstance(row, list)]


def healthy(scale: float = 1.0) -> Behaviour:
    """200 with ``{"predictions": [...]}``; ``scale`` != 1 answers other numbers (a silent regression)."""
    return lambda body: (200, {}, {"predictions": predictions(body, scale)})


def model_fails(status: int = 500) -> Behaviour:
    """The scoring script fails: the endpoint answers 424 and says the model's status in a header."""
    headers = {"ms-azureml-model-error-statuscode": str(status), "ms-azureml-model-error-reason": "model_error"}
    return lambda body: (424, headers, {"message": "An unexpected error occurred in scoring script."})


def answers(answer: Any, status: int = 200) -> Behaviour:
    """Always the same answer (a wrong shape, say)."""
    return lambda body: (status, {}, answer)


class FakeScoring:
    """The endpoints' scoring URIs, on the fake ARM's state; ``calls`` holds (endpoint, deployment, body)
    of each request that reached a deployment."""

    def __init__(self, arm: FakeArm) -> None:
        self.arm = arm
        self.behaviours: dict[tuple[str, str], Behaviour] = {}
        self.calls: list[tuple[str, str, Any]] = []
        # Where an answered request is counted, as Azure Monitor counts every request a deployment
        # answers (the platform metrics and the traffic log): set by the test world to its health fakes.
        self.counted: Callable[[str, str, int], None] | None = None

    def aad(self, endpoint: str) -> None:
        """The endpoint authenticates callers with Microsoft Entra tokens (``auth_mode: aad_token``)."""
        self.arm.endpoints[endpoint]["properties"]["authMode"] = "AADToken"

    def answer_with(self, endpoint: str, deployment: str, behaviour: Behaviour) -> None:
        self.behaviours[(endpoint, deployment)] = behaviour

    def to(self, deployment: str) -> list[Any]:
        """The bodies sent to ``deployment``, in order."""
        return [body for _, d, body in self.calls if d == deployment]

    def handles(self, host: str) -> bool:
        return host.endswith(HOST_SUFFIX)

    def answer(self, call: Call) -> Answer:
        url = urlparse(call.url)
        endpoint = next(
            (
                n
                for n, e in self.arm.endpoints.items()
                if urlparse(e["properties"]["scoringUri"]).hostname == url.hostname
            ),
            None,
        )
        if endpoint is None:
            raise Unexpected(f"no endpoint has the scoring host {url.hostname}")
        if call.method != "POST" or url.path != "/score":
            raise Unexpected(f"{call.method} {url.path} on a scoring URI")
        self._authorize(call, endpoint)
        deployment = self._route(call, endpoint)
        self.calls.append((endpoint, deployment, call.body))
        behaviour = self.behaviours.get((endpoint, deployment), healthy())
        answer = behaviour(call.body)
        if self.counted is not None:
            self.counted(endpoint, deployment, answer[0])
        return answer

    def _authorize(self, call: Call, endpoint: str) -> None:
        props = self.arm.endpoints[endpoint]["properties"]
        header = call.headers.get("Authorization")
        if props["authMode"] != "AADToken":
            raise Refusal(401, "Unauthorized", "Invalid key or token", body={"message": "Invalid key or token"})
        if token_audience(header) != AUDIENCE:
            message = f"The token's audience is not {AUDIENCE}"
            raise Refusal(401, "Unauthorized", message, body={"message": message})
        oid = str(token_claims(header).get("oid"))
        principal = self.arm.principal if oid == self.arm.principal.oid else self.arm.others.get(oid)
        scope = self.arm.endpoints[endpoint]["id"]
        if principal is None or not principal.allows(SCORE, scope):
            self.arm.refused.append((SCORE, scope))
            message = f"The client '{oid}' does not have permission to perform '{SCORE}' over scope '{scope}'"
            raise Refusal(401, "Unauthorized", message, body={"message": message})

    def _route(self, call: Call, endpoint: str) -> str:
        named = call.headers.get("azureml-model-deployment")
        if named:
            found = self.arm.deployments.get((endpoint, named))
            if found is None or found["properties"]["provisioningState"] != "Succeeded":
                message = f"Deployment {named} not found or not ready"  # unverified wording
                raise Refusal(404, "NotFound", message, body={"message": message})
            return str(named)
        traffic = self.arm.endpoints[endpoint]["properties"].get("traffic") or {}
        live = sorted((d for d, p in traffic.items() if p > 0), key=lambda d: -traffic[d])
        if not live:
            message = (
                "No valid deployments to route to. Please check that the endpoint has at least one deployment "
                "with positive weight values or use a deployment specific header to route."
            )
            raise Refusal(404, "NotFound", message, body={"message": message})
        return str(live[0])
