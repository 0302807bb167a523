"""The Scoring port (:class:`handlers.rollout.smoke.Scoring`) on Azure ML: one deployment of a managed
online endpoint invoked directly, for a smoke test before it gets traffic.

The request goes to the endpoint's scoring URI (``online_endpoints.get``: ``scoring_uri``) with the
``azureml-model-deployment`` header, which routes it to that deployment whatever the traffic split (Azure
ML docs, "Safe rollout for online endpoints", test the new deployment). The service authenticates as its
own identity with a Microsoft Entra token for ``https://ml.azure.com``: that is what an endpoint whose
``auth_mode`` is ``aad_token`` accepts, and the caller needs
``Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action`` (Azure ML docs,
"Authenticate clients for online endpoints": a "data plane" action, which roles grant under ``actions``). An endpoint with ``key`` or ``aml_token`` auth wants a key
or a token the service would have to fetch with ``listKeys`` or ``token``, which its role does not hold on
purpose (function_app/adapters/permissions.py, NEVER_GRANTED): such an endpoint is answered "cannot be
invoked", and the smoke test fails saying how to fix it.

Status codes as the endpoint answers them (Azure ML docs, "Troubleshoot online endpoints", HTTP status
codes): 401 when the caller may not score or its token is wrong, 404 when no deployment of that name can
take the request, 408 on the deployment's own request timeout, 424 when the model's container answered
another status than 200 (its code in ``ms-azureml-model-error-statuscode``), 429 throttled (not the
candidate's verdict: the smoke test is tried again on the next pass). A request sent and not answered
in time is an answer without a status marked ``unanswered``, and a 424's model status is read as a
number (``model_status``): with 408, 500, 502, 503 and 504 they are the answers an outage gives, which
the smoke test takes to the live deployment before blaming the candidate
(:mod:`handlers.rollout.smoke_outage`). Plain azure-core HTTP with retries off; the body is never logged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from function_app.adapters.azureml.client import AzureMLClient
from handlers.errors import PermanentError, TransientError
from handlers.rollout.smoke import Scored

log = logging.getLogger(__name__)

SCORING_SCOPE = "https://ml.azure.com/.default"
SCORE_ACTION = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action"
DEPLOYMENT_HEADER = "azureml-model-deployment"
MODEL_STATUS_HEADER = "ms-azureml-model-error-statuscode"
# The hosts of managed online endpoints' scoring URIs (public cloud, Azure Government, Azure China): the
# only hosts the service's Entra token is ever sent to, whatever an endpoint object says.
INFERENCE_DOMAINS = (".inference.ml.azure.com", ".inference.ml.azure.us", ".inference.ml.azure.cn")
ENDPOINT_TTL = 300.0  # seconds a read endpoint (scoring URI, auth mode) is used before it is read again


class AzureMLScoring:
    """Invokes deployments through their endpoint's scoring URI, as the service's identity."""

    def __init__(self, client: AzureMLClient) -> None:
        self.client = client
        self._endpoints: dict[str, tuple[float, str, str]] = {}  # name -> (read at, scoring URI, auth mode)
        self._pipeline: Any = None

    def _endpoint(self, endpoint: str) -> tuple[str, str]:
        now = self.client.retry.clock()
        held = self._endpoints.get(endpoint)
        if held is None or now - held[0] > ENDPOINT_TTL:
            found = self.client.call(
                self.client.retry.budget(),
                f"endpoint {endpoint}",
                lambda: self.client.ml.online_endpoints.get(endpoint),
            )
            uri = str(getattr(found, "scoring_uri", None) or "")
            mode = str(getattr(found, "auth_mode", None) or "key").lower()
            held = (now, uri, mode)
            self._endpoints[endpoint] = held
        return held[1], held[2]

    def _client(self) -> Any:
        if self._pipeline is None:
            from azure.core import PipelineClient
            from azure.core.pipeline import policies

            credential = self.client.credential
            if credential is None:
                raise PermanentError("the Azure ML backend has no credential to invoke deployments with")
            pipeline = [
                policies.HeadersPolicy(),
                policies.RetryPolicy(retry_total=0),  # a smoke request is sent once: its failure is the verdict's
                policies.BearerTokenCredentialPolicy(credential, SCORING_SCOPE),
            ]
            self._pipeline = PipelineClient("https://ml.azure.com", policies=pipeline, **self.client.http_options)
        return self._pipeline

    def score(self, endpoint: str, deployment: str, body: Any, timeout: float) -> Scored:
        """``endpoint/deployment``'s answer to ``body`` (JSON), within ``timeout`` seconds."""
        from azure.core.rest import HttpRequest

        uri, mode = self._endpoint(endpoint)
        if mode != "aad_token":
            return Scored(
                None,
                error=f"endpoint {endpoint} authenticates callers with {mode}, and the service invokes deployments "
                "only with its Microsoft Entra identity (it holds no endpoint keys); set the endpoint's auth_mode "
                "to aad_token, or remove deploy.rollout.smoke",
            )
        if not uri:
            return Scored(None, error=f"endpoint {endpoint} reports no scoring URI")
        refused = _untrusted(uri)
        if refused is not None:
            log.warning("smoke test of %s/%s not sent: %s", endpoint, deployment, refused)
            return Scored(None, error=f"endpoint {endpoint}'s {refused}")
        request = HttpRequest(
            "POST",
            uri,
            content=json.dumps(body),
            headers={"Content-Type": "application/json", DEPLOYMENT_HEADER: deployment},
        )
        started = time.perf_counter()
        with self.client.translating(f"invoking deployment {endpoint}/{deployment}"):
            try:
                response = self._client().send_request(request, connection_timeout=timeout, read_timeout=timeout)
            except (ServiceRequestError, ServiceResponseError) as exc:
                what = "no answer" if isinstance(exc, ServiceResponseError) else "the connection failed"
                said = f"{what} within {timeout:g}s ({type(exc).__name__})"
                return Scored(None, ms=_ms(started), error=said, unanswered=True)  # sent: an outage can do this
        ms = _ms(started)
        if response.status_code in (401, 403):
            raise PermanentError(
                f"endpoint {endpoint} refused the service's identity ({response.status_code}) when invoking deployment "
                f"{deployment}: grant it {SCORE_ACTION} on the workspace (the service's custom role, "
                "infra/modules/workspace-access.bicep, or AzureML Data Scientist); a new role assignment can take up "
                "to an hour to apply"
            )
        if response.status_code == 429:  # the endpoint throttles (its request limits): not the candidate's verdict
            raise TransientError(
                f"endpoint {endpoint} throttled the smoke test's request to deployment {deployment} (429); it is "
                "sent again on the next pass"
            )
        error, model_status = None, None
        if response.status_code == 424:
            said = response.headers.get(MODEL_STATUS_HEADER)
            model_status = int(said) if said and said.strip().isdigit() and 100 <= int(said) <= 599 else None
            error = f"the model answered {model_status or 'another status than 200'}"
        try:
            text = response.text()
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
            error = error or "the answer is not JSON"
        return Scored(response.status_code, answer, ms, error, model_status=model_status)


def _untrusted(uri: str) -> str | None:
    """Why the service's token must not go to ``uri``; None for a managed online endpoint's scoring URI
    (https, on Azure ML's inference domain, no user info, the default port)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or parts.username or parts.password or parts.port not in (None, 443):
        return f"scoring URI {uri[:200]!r} is not a plain https URI; the service's token is sent only to one"
    if not host.endswith(INFERENCE_DOMAINS):
        return (
            f"scoring URI host {host!r} is not a managed online endpoint's ({', '.join('*' + d for d in INFERENCE_DOMAINS)}); "
            "the service sends its token only there: smoke-test managed online endpoints, or remove deploy.rollout.smoke"
        )
    return None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
