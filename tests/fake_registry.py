"""Azure ML registries as the real ``MLClient(registry_name=...)`` reaches them, answered inside
:class:`tests.fake_arm.FakeArm` (the one transport the Azure ML backend is given).

Two services, as azure-ai-ml 1.35's ``_registry_utils`` calls them:

- the registry discovery service, ``https://eastus.api.azureml.ms/registrymanagement/v1.0/registries/
  <r>/discovery`` (the SDK's discovery endpoint for the public cloud, whatever the registry's region):
  where the registry is (``subscriptionId``, ``resourceGroup``, ``primaryRegion``,
  ``primaryRegionResourceProviderUri``); 404 for a registry that does not exist;
- the registry's regional endpoint, ``https://cert-<region>.experiments.azureml.net/mferp/
  managementfrontend`` + the registry's ARM path, api-version ``2021-10-01-dataplanepreview``: model
  versions, ``GET .../registries/<r>/models/<m>/versions/<v>`` in the ModelVersion resource's shape
  (azure-rest-api-specs, machinelearningservices registries ``registryModelVersions``; ``flavors``
  always present, as the SDK reads it); 404 ``UserError`` for a version the registry does not hold.

Who may: the caller's token must hold, at the registry's scope, ``registries/read`` to discover it
``registries/assets/read`` to read a version and ``registries/assets/write`` to import one (the actions of AzureML Registry User, whose
``registries/assets/*`` also writes and deletes), as :mod:`tests.rbac` reads them from ``infra/``;
otherwise 403 ``AuthorizationFailed`` as ARM words it. (Unverified: that the discovery service checks
``registries/read`` itself; the service needs the role for the read that follows in any case.)
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fake_arm_common import system_data
from tests.fake_http import APP_CLAIMS, Refusal, Unexpected, token_audience, token_claims

if TYPE_CHECKING:
    from tests.fake_arm import FakeArm
    from tests.fake_arm_common import Call

DISCOVERY_HOST = "eastus.api.azureml.ms"
MFE_PREFIX = "/mferp/managementfrontend"
API_VERSION = "2021-10-01-dataplanepreview"
PROVIDER = "Microsoft.MachineLearningServices"
WORKSPACE_ID = "5b1f3b5e-7f0e-4c55-9c3b-4a3f2d1e0c9b"  # the fake workspace's id (its workspaceId)
AUDIENCES = ("https://management.azure.com", "https://ml.azure.com")


@dataclass
class Registry:
    name: str
    subscription: str
    resource_group: str
    region: str
    models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    made: int = 0  # versions made: each one's creation time is a minute after the one before

    def created(self) -> str:
        self.made += 1
        return f"2026-11-20T{9 + self.made // 60:02d}:{self.made % 60:02d}:00.000000+00:00"

    @property
    def path(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/{PROVIDER}"
            f"/registries/{self.name}"
        )

    @property
    def host(self) -> str:
        return f"cert-{self.region}.experiments.azureml.net"


class FakeRegistries:
    """The registries the world holds, answered for :class:`FakeArm` (its caller check, its calls)."""

    def __init__(self, arm: FakeArm) -> None:
        self.arm = arm
        self.registries: dict[str, Registry] = {}

    def add_registry(self, name: str, subscription: str, resource_group: str, region: str = "westeurope") -> Registry:
        self.registries[name.casefold()] = Registry(name, subscription, resource_group, region)
        return self.registries[name.casefold()]

    def add_model(
        self,
        registry: str,
        name: str,
        version: str,
        *,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        kind: str = "custom_model",
        by: dict[str, Any] | None = None,
    ) -> str:
        """A model version in ``registry``, created by the identity of token claims ``by`` (by default the
        upstream service's, which in these worlds shares :data:`tests.fake_http.APP_CLAIMS`): its
        ``systemData`` as ARM records a creator (:func:`tests.fake_arm_common.system_data`: a managed identity
        by its client id, ``ManagedIdentity``; a person by sign-in name, ``User``); its id as a deployment
        names it."""
        reg = self.registries[registry.casefold()]
        asset_id = f"azureml://registries/{reg.name}/models/{name}/versions/{version}"
        reg.models[(name, version)] = {
            "id": asset_id,
            "name": version,
            "type": f"{PROVIDER}/registries/models/versions",
            "systemData": system_data(APP_CLAIMS if by is None else by, reg.created()),
            "properties": {
                "modelType": kind,
                "flavors": {},
                "modelUri": f"azureml://registries/{reg.name}/models/{name}/versions/{version}",
                "tags": dict(tags or {}),
                "properties": dict(properties or {}),
                "isAnonymous": False,
                "isArchived": False,
            },
        }
        return asset_id

    def deployable(self, call: Call, model: str) -> bool:
        """Whether a deployment's ``model`` is a version of a registry (``azureml://registries/<r>/models/
        <m>/versions/<v>``) that the registry holds; the caller creating the deployment must be able to
        read it there: ``registries/assets/read`` at the registry, which the docs tie to "use the assets in a
        workspace" ("Manage Azure Machine Learning registries"; whether Azure checks ``registries/read`` too
        is not said, and infra grants both: docs/azure-behaviour.md), else 403 as ARM words it; and the
        workspace must be in one of the registry's regions ("Share models ... with registries": deploy to
        "any workspace ... provided the location of the workspace is one of the locations supported by the
        registry"), else 400. False for a model that is not a registry's (the workspace's to find)."""
        match = re.fullmatch(r"azureml://registries/([^/]+)/models/([^/]+)/versions/([^/]+)", model, re.IGNORECASE)
        if match is None:
            return False
        reg = self._registry(match[1])
        self.arm._authorize(call, f"{PROVIDER}/registries/assets/read", reg.path)
        if (
            self.arm.location.casefold() != reg.region.casefold()
        ):  # the registry's one region here (the words are unverified)
            raise Refusal(
                400,
                "UserError",
                f"Model {model} cannot be deployed in {self.arm.location}: registry {reg.name} is not available in "
                f"that region (its regions: {reg.region})",
            )
        if (match[2], match[3]) not in reg.models:
            raise Refusal(400, "UserError", f"Model {model} not found")
        return True

    def handles(self, host: str) -> bool:
        return host == DISCOVERY_HOST or any(host == r.host for r in self.registries.values())

    def answer(self, call: Call) -> tuple[int, dict[str, str], Any]:
        if token_audience(call.headers.get("Authorization")) not in AUDIENCES:
            raise Unexpected("no bearer token for Azure ML")
        if call.url.split("/")[2] == DISCOVERY_HOST:
            return self._discover(call)
        return self._model_version(call)

    def _registry(self, name: str) -> Registry:
        found = self.registries.get(name.casefold())
        if found is None:
            raise Refusal(404, "UserError", f"Registry {name} not found.")
        return found

    def _in(self, sub: str, rg: str, name: str) -> Registry:
        reg = self._registry(name)
        if (sub, rg.casefold()) != (reg.subscription, reg.resource_group.casefold()):
            raise Refusal(404, "UserError", f"Registry {name} not found in resource group {rg}.")
        return reg

    def _import(self, call: Call, reg: Registry) -> tuple[int, dict[str, str], Any]:
        """``models.create_or_update(WorkspaceAssetReference)``: the workspace's version copied into the
        registry under ``destinationName``/``destinationVersion`` with its type, tags and properties
        (unverified that Azure carries the tags over; the service checks what the copy carries), as a
        long-running operation (202 and a ``Location``). The source must be this workspace's version,
        named by its region and workspace id; an existing destination version is refused (409)."""
        self.arm._authorize(call, f"{PROVIDER}/registries/assets/write", reg.path)
        props = (call.body or {}).get("properties") or {}
        source = re.fullmatch(
            r"azureml://locations/([^/]+)/workspaces/([^/]+)/models/([^/]+)/versions/([^/]+)",
            str(props.get("sourceAssetId") or ""),
        )
        if props.get("referenceType") != "Id" or source is None:
            raise Unexpected(f"an import of {props!r}")
        location, workspace_id, name, version = source.groups()
        found = self.arm.models.get((name, version))
        if (location, workspace_id) != (self.arm.location, WORKSPACE_ID) or found is None:
            raise Refusal(404, "UserError", f"Could not find asset with ID: {props['sourceAssetId']}")
        to = (str(props.get("destinationName") or name), str(props.get("destinationVersion") or version))
        if to in reg.models:
            raise Refusal(409, "UserError", f"Asset {to[0]}:{to[1]} already exists in registry {reg.name}.")
        source_props = found["properties"]
        self.add_model(
            reg.name,
            *to,
            tags=source_props.get("tags"),
            properties=source_props.get("properties"),
            kind=source_props.get("modelType") or "custom_model",
            by=token_claims(call.headers.get("Authorization")),  # the importer (unverified for a registry's copy)
        )
        status = (
            f"https://{reg.host}{MFE_PREFIX}/subscriptions/{reg.subscription}/providers/{PROVIDER}/locations/"
            f"{reg.region}/registryOperations/{uuid.uuid4()}?api-version={API_VERSION}"
        )
        return 202, {"Location": status}, None

    def _discover(self, call: Call) -> tuple[int, dict[str, str], Any]:
        match = re.fullmatch(r"/registrymanagement/v1\.0/registries/([^/]+)/discovery", call.path)
        if call.method != "GET" or match is None or call.api_version != "v1.0":
            raise Unexpected(f"discovery {call.method} {call.path} api-version {call.api_version}")
        reg = self._registry(match[1])
        self.arm._authorize(call, f"{PROVIDER}/registries/read", reg.path)
        body = {
            "registryName": reg.name,
            "tenantId": "00000000-0000-0000-0000-00000000000f",
            "primaryRegion": reg.region,
            "regions": [reg.region],
            "subscriptionId": reg.subscription,
            "resourceGroup": reg.resource_group,
            "primaryRegionResourceProviderUri": f"https://{reg.host}/",
        }
        return 200, {}, body

    def _model_version(self, call: Call) -> tuple[int, dict[str, str], Any]:
        base = rf"{MFE_PREFIX}/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/{PROVIDER}/registries/([^/]+)"
        if call.api_version != API_VERSION:
            raise Unexpected(f"registry api-version {call.api_version}")
        if re.fullmatch(
            rf"{MFE_PREFIX}/subscriptions/[^/]+/providers/{PROVIDER}/locations/[^/]+/registryOperations/[^/]+",
            call.path,
        ):
            return 200, {}, None  # an import's status: done when asked (its version is there already)
        listed = re.fullmatch(base + r"/models/([^/]+)/versions", call.path)
        if call.method == "GET" and listed:
            reg = self._in(*listed.groups()[:3])
            self.arm._authorize(call, f"{PROVIDER}/registries/assets/read", reg.path)
            # All of the model's versions, one page; $orderBy (createdtime desc) and $top as the SDK's
            # latest-version lookup sends them (unverified: the registry's order without $orderBy)
            versions = [v for (n, _), v in reg.models.items() if n == listed[4]]
            query = {k.casefold(): v for k, v in call.query.items()}
            if "desc" in str(query.get("$orderby") or "").casefold():
                versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse=True)
            if query.get("$top"):
                versions = versions[: int(query["$top"])]
            return 200, {}, {"value": versions}
        imported = re.fullmatch(base + "/import", call.path)
        if call.method == "POST" and imported:
            return self._import(call, self._in(*imported.groups()))
        pattern = (
            rf"{MFE_PREFIX}/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/{PROVIDER}"
            r"/registries/([^/]+)/models/([^/]+)/versions/([^/]+)"
        )
        match = re.fullmatch(pattern, call.path)
        if call.method != "GET" or match is None:
            raise Unexpected(f"registry {call.method} {call.path} api-version {call.api_version}")
        sub, rg, name, model, version = match.groups()
        reg = self._in(sub, rg, name)
        self.arm._authorize(call, f"{PROVIDER}/registries/assets/read", reg.path)
        found = reg.models.get((model, version))
        if found is None:
            raise Refusal(404, "UserError", f"Could not find asset with ID: {model}:{version}")
        return 200, {}, found
