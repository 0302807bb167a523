"""The client every port of the Azure ML backend goes through: the ``MLClient`` (built once per
worker, on first use, with the worker's managed identity and the SDK's own retries off:
:mod:`function_app.retry` owns the time budget), who the service acts as, and :meth:`AzureMLClient.call`,
the one way an SDK call is made: within the budget, its errors translated here, at the boundary.

Nothing here imports ``azure.ai.ml`` at import time: importing the SDK costs about a second and
100 MB, and nothing the root script imports may depend on it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core.exceptions import AzureError, ResourceNotFoundError

from function_app.adapters import azure_errors
from function_app.adapters.clients import LazyClient, sdk_options
from function_app.adapters.mlflow_metrics import MlflowRuns
from function_app.retry import Budget, RetryPolicy
from handlers.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from types import FrameType

    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings

log = logging.getLogger(__name__)

BACKEND = "azureml"  # the backend's name, as RETRAIN_BACKEND and the decisions' details spell it
STUDIO = "https://ml.azure.com"
BUSY = frozenset({409})  # an endpoint or schedule with an operation in progress: retried (call's retry_on)
# A versioned asset (a data asset, a model, a component) as the SDK writes it in short form; "@" is the
# SDK's label separator (azure.ai.ml LABEL_SPLITTER: name@label), so it is in neither part.
SHORT_ASSET = re.compile(r"^azureml:(?P<name>[^:@/]+):(?P<version>[^:@/]+)$")
# A data asset version as its resource id ends (.../data/<name>/versions/<version>), as the REST API writes it.
DATA_ID = re.compile(r"/data/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    name: str
    id: str  # the ARM resource id

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspace:
        return cls(settings.subscription_id, settings.resource_group, settings.workspace_name, settings.workspace_id)

    def studio(self, path: str) -> str:
        return f"{STUDIO}/{path}?wsid={quote(self.id, safe='/')}"


ROLE_PROPAGATION = 3600.0  # seconds: "role assignments can take up to an hour to take effect"


def _from_rest_object_is_calling() -> bool:
    """azure-ai-ml's ``_should_skip_warning``, without its cost: whether a ``_from_rest_object`` is
    among the callers (the SDK then skips its "experimental class" warning). The SDK answers it with
    ``inspect.stack()``, which reads the source file of every frame on the stack and scans every loaded
    module for each: tens of milliseconds, four times for each deployment read that carries a data
    collector (every rollout pass lists them). Walking the frames answers the same question."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_from_rest_object":
            return True
        frame = frame.f_back
    return False


def _cheaper_experimental_check() -> None:
    """Put :func:`_from_rest_object_is_calling` in place of the SDK's check (the same answer; it is
    looked up at each call). Only where the pinned SDK has the check: a newer one is left as it is."""
    from azure.ai.ml._utils import _experimental

    sdk_check = getattr(_experimental, "_should_skip_warning", None)
    if callable(sdk_check) and sdk_check is not _from_rest_object_is_calling:
        _REPLACED.append(sdk_check)  # kept, so a test can hold the two to the same answers
        _experimental._should_skip_warning = _from_rest_object_is_calling


_REPLACED: list[Callable[[], bool]] = []


GRANT = (  # what to do when Azure ML refuses the service access
    "grant the function app's managed identity a role on the workspace that allows it: the service's custom "
    "role (infra/modules/workspace-access.bicep; the actions it needs are in function_app/adapters/"
    "permissions.py), or AzureML Data Scientist"
)


def _claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without verifying it (our own credential's token)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError) as exc:
        raise PermanentError(f"the service's own access token is not a JWT ({type(exc).__name__})") from exc
    return claims if isinstance(claims, dict) else {}


def who_created(context: Any) -> tuple[str, str]:
    """Who created a resource and of what type, as its ``creation_context`` (ARM's ``systemData``) says:
    ``createdBy`` and ``createdByType`` (the SDK's ``CreatedByType``, a str enum, as its value); ``""`` for
    either one not said."""
    kind = getattr(context, "created_by_type", None)
    return str(getattr(context, "created_by", None) or ""), str(getattr(kind, "value", kind) or "")


@dataclass(frozen=True)
class Identity:
    """Who the service acts as, as Azure records a creator (``systemData.createdBy`` / ``createdByType``):
    an application or managed identity by its client id (``appid`` / ``azp``) or object id (``oid``);
    a person (running the service locally with their sign-in) by sign-in name or object id."""

    names: frozenset[str]
    kinds: frozenset[str]
    label: str

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        if claims.get("idtyp") == "user" or "upn" in claims:
            keys: tuple[str, ...] = ("upn", "unique_name", "preferred_username", "email", "oid")
            kinds = frozenset({"user"})
        else:
            keys, kinds = ("appid", "azp", "oid"), frozenset({"application", "managedidentity"})
        names = frozenset(str(claims[k]).lower() for k in keys if claims.get(k))
        if not names:
            raise PermanentError("the service's own access token names no identity (no appid, azp, oid or upn)")
        label = str(claims.get("appid") or claims.get("azp") or claims.get("upn") or claims.get("oid"))
        return cls(names, kinds, label)


class AzureMLClient:
    """What every port of the backend shares: the ``MLClient`` (built on first use), the workspace, the
    retry policy, the MLflow reader, who the service acts as, and :meth:`call`, which every SDK call
    goes through."""

    def __init__(self, ml_client: Any, workspace: Workspace, retry: RetryPolicy) -> None:
        """``ml_client``: an ``MLClient``, or a function that builds one on first use (once per worker)."""
        self.lazy = LazyClient(ml_client)
        self.workspace = workspace
        self.retry = retry
        self.mlflow: MlflowRuns | None = None  # the workspace's MLflow tracking server (gate source mlflow)
        self.started = retry.clock()  # role assignments made at deployment take up to an hour to apply
        self._credential: TokenCredential | None = None  # the client's credential (from_settings)
        self._identity: Identity | None = None
        self.http_options: dict[str, Any] = {}  # what a plain azure-core client of the backend gets (transport=)
        self.registry_client: Callable[[str], Any] | None = None  # builds an MLClient for a registry (from_settings)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credential: TokenCredential,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> AzureMLClient:
        """The worker's client: nothing is imported or built until the first action. The ``MLClient`` is
        built with ``credential`` (the worker's one: :func:`function_app.runtime.make_credential`) and with
        the SDK's own retries off."""
        workspace = Workspace.from_settings(settings)
        deadline = settings.deadline_seconds

        def build() -> Any:
            from azure.ai.ml import MLClient  # lazily, on the first action

            _cheaper_experimental_check()
            kwargs = sdk_options(deadline, enable_telemetry=False, **client_kwargs)
            log.info("building MLClient for workspace %s", workspace.id)
            return MLClient(credential, workspace.subscription_id, workspace.resource_group, workspace.name, **kwargs)

        def build_for_registry(registry: str) -> Any:
            from azure.ai.ml import MLClient

            _cheaper_experimental_check()
            kwargs = sdk_options(deadline, enable_telemetry=False, **client_kwargs)
            log.info("building MLClient for registry %s", registry)
            return MLClient(credential, registry_name=registry, **kwargs)

        transport = {k: v for k, v in client_kwargs.items() if k == "transport"}
        client = cls(build, workspace, retry or RetryPolicy.from_settings(settings))
        client.registry_client = build_for_registry
        client._credential = credential
        client.http_options = transport
        client.mlflow = MlflowRuns(credential, client.tracking_uri, **transport)
        return client

    @property
    def roles_settling(self) -> bool:
        """Whether this worker started less than :data:`ROLE_PROPAGATION` ago (a 403 is then retried)."""
        return self.retry.clock() - self.started < ROLE_PROPAGATION

    @property
    def ml(self) -> Any:
        return self.lazy.get()

    @property
    def credential(self) -> TokenCredential | None:
        """The credential the client acts with (None for a client built around a given ``MLClient``)."""
        return self._credential if self._credential is not None else getattr(self.ml, "_credential", None)

    def call(
        self,
        budget: Budget,
        what: str,
        fn: Callable[[], Any],
        fix: str = "",
        *,
        retry_on: frozenset[int] = frozenset(),
        or_none: bool = False,
    ) -> Any:
        """``fn()``, one SDK call about ``what``: retried within ``budget`` while it fails transiently
        (and on the HTTP statuses ``retry_on``: 409 on an endpoint means "an operation is in progress"),
        then a TransientError; any other SDK error becomes the PermanentError that :meth:`translate`
        makes of it, with ``fix``. ``or_none``: a 404 means "there is none", and answers None. (Every
        error azure-ai-ml raises on purpose is an azure-core ``AzureError``.)"""
        with self.translating(what, fix):
            try:
                return budget.call(what, fn, retry_on=retry_on)
            except ResourceNotFoundError:
                if or_none:
                    return None
                raise

    @property
    def reads_deployment_bodies(self) -> bool:
        """Whether :meth:`deployment_body` can be used: the pinned azure-ai-ml keeps the REST client
        ``online_deployments.get`` itself uses (another version may not)."""
        return getattr(self.ml.online_deployments, "_online_deployment", None) is not None

    def deployment_body(self, budget: Budget, what: str, endpoint: str, name: str, *, or_none: bool = False) -> Any:
        """Deployment ``endpoint/name`` as the REST API answers it, through :meth:`call`: the SDK's entity
        drops parts of it (``systemData``, ``modelMountPath``). Only when :attr:`reads_deployment_bodies`."""
        rest = self.ml.online_deployments._online_deployment
        return self.call(
            budget,
            what,
            lambda: rest.get(
                resource_group_name=self.workspace.resource_group,
                workspace_name=self.workspace.name,
                endpoint_name=endpoint,
                deployment_name=name,
            ),
            or_none=or_none,
        )

    @contextmanager
    def translating(self, what: str, fix: str = "", *, roles_settling: bool | None = None) -> Iterator[None]:
        """An SDK error raised inside, translated (:meth:`translate`): for calls that run their own budget
        (the MLflow reader's) or that are no Azure ML request (the credential's token)."""
        try:
            yield
        except AzureError as exc:
            raise self.translate(exc, what, fix, roles_settling=roles_settling) from exc

    def translate(
        self, exc: AzureError, what: str, fix: str = "", *, roles_settling: bool | None = None
    ) -> PermanentError | TransientError:
        """``exc`` as the service's error (:func:`azure_errors.translate`), as Azure ML's answer about
        ``what`` in this workspace: ``fix`` the remedy; a 403 while roles settle is retried."""
        return azure_errors.translate(
            exc,
            what,
            fix,
            service="Azure ML",
            where=f"workspace {self.workspace.name}",
            refused=GRANT,
            roles_settling=self.roles_settling if roles_settling is None else roles_settling,
        )

    def own_identity(self) -> Identity:
        """Who this client acts as: read once from the claims of its own ARM token (unverified: it
        is our credential's own token, not a caller's)."""
        if self._identity is None:
            credential = self.credential
            if credential is None:
                raise PermanentError("the Azure ML client has no credential to tell this service's own jobs apart")
            with self.translating("reading the service's own identity", roles_settling=False):
                token = credential.get_token("https://management.azure.com/.default").token
            self._identity = Identity.from_claims(_claims(token))
        return self._identity

    def not_created_by_us(self, creator: Any) -> str | None:
        who, kind = who_created(creator)
        mine = self.own_identity()
        if not who:
            return "Azure ML reports no creator for it"
        if kind.lower() not in mine.kinds or who.lower() not in mine.names:
            return f"this service's identity ({mine.label}) did not create it"
        return None

    def tracking_uri(self) -> str:
        """The workspace's MLflow tracking URI (``workspaces.get(name).mlflow_tracking_uri``)."""
        found = self.call(
            self.retry.budget(),
            f"workspace {self.workspace.name}",
            lambda: self.ml.workspaces.get(self.workspace.name),
        )
        uri = getattr(found, "mlflow_tracking_uri", None)
        if not uri:
            raise PermanentError(f"workspace {self.workspace.name} reports no MLflow tracking URI")
        return str(uri)
