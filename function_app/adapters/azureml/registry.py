"""Model versions of an Azure ML registry (the policy's ``environment.registry``), read with an
``MLClient`` built for the registry (``MLClient(credential, registry_name=...)``): once per registry
per worker, on first use. Building it asks Azure ML's registry discovery service where the registry
lives (its subscription, resource group and region); its model versions are then read from the
registry's regional endpoint (azure-ai-ml's ``_registry_utils``: ``.../registries/<r>/models/<m>/
versions/<v>``, api-version ``2021-10-01-dataplanepreview``).

Sharing (:class:`RegistryShare`, an upstream environment's promotion): the version the promoted
deployment serves is tagged with its lineage in the workspace, then imported into the registry under
the same name and version, as ``models.share`` does (``WorkspaceAssetReference`` through the registry's
``models.create_or_update``: a ``GET`` of the version, 404, then ``POST .../registries/<r>/import``, a
long-running operation). ``models.share`` itself is not called: azure-ai-ml 1.35 builds its registry
client there without the caller's transport or options (``_set_registry_client``).

What the service needs on the registry: ``registries/read`` and ``registries/assets/read``, and to
share, ``registries/assets/write`` (infra/modules/registry-access.bicep and registry-publisher.bicep
assign custom roles with exactly these; AzureML Registry User would also let it delete every asset).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from function_app.adapters import azure_errors
from function_app.adapters.azureml.client import SHORT_ASSET, AzureMLClient, who_created
from function_app.retry import Budget
from handlers.errors import PermanentError
from handlers.pickup import SOURCE_WORKSPACE, RegistryVersionInfo

log = logging.getLogger(__name__)

_MODEL = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE
)
_WORKSPACE_VERSION = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE)
GRANT = (
    "grant the function app's managed identity the registry's role on the registry "
    "(infra/modules/registry-access.bicep: registries/read and registries/assets/read; "
    "registry-publisher.bicep to share: registries/assets/write too)"
)


@dataclass(frozen=True)
class RegistryModelRef:
    """A model version of a registry, as a deployment names it: ``azureml://registries/<r>/models/<m>/versions/<v>``."""

    registry: str
    name: str
    version: str

    @classmethod
    def parse(cls, ref: str) -> RegistryModelRef | None:
        match = _MODEL.match(ref)
        return None if match is None else cls(match["registry"], match["name"], match["version"])

    def __str__(self) -> str:
        return f"{self.name}:{self.version} of registry {self.registry}"


class RegistryModels:
    """Registry model versions, read through one ``MLClient`` per registry (``build(registry)``: the
    worker's builder, :meth:`function_app.adapters.azureml.client.AzureMLClient.from_settings`)."""

    def __init__(self, build: Callable[[str], Any] | None) -> None:
        self._build = build
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, registry: str) -> Any:
        key = registry.casefold()
        with self._lock:
            if key not in self._clients:
                if self._build is None:
                    raise PermanentError(
                        f"registry {registry}: this backend reads no registry (build it with AzureMLActions.from_settings)"
                    )
                self._clients[key] = self._build(registry)  # asks the discovery service where the registry is
            return self._clients[key]

    def version(self, budget: Budget, ref: RegistryModelRef, *, roles_settling: bool, or_none: bool = False) -> Any:
        """The registry's model version ``ref`` (the SDK's ``Model``: its tags, properties, id);
        ``or_none``: None when the registry does not hold it."""
        return self.call(
            budget,
            f"reading model {ref}",
            lambda: self.client(ref.registry).models.get(ref.name, version=ref.version),
            ref.registry,
            roles_settling=roles_settling,
            or_none=or_none,
        )

    def versions(self, budget: Budget, registry: str, model: str, *, roles_settling: bool) -> list[RegistryVersionInfo]:
        """The versions of ``model`` in ``registry`` (``models.list(name=...)`` of the registry's client: one
        ``GET .../registries/<r>/models/<m>/versions``), with their tags, creation times and creators (its
        ``systemData``); none when the registry holds no such model."""
        found = self.call(
            budget,
            f"listing the versions of model {model} in registry {registry}",
            lambda: list(self.client(registry).models.list(name=model)),
            registry,
            roles_settling=roles_settling,
            or_none=True,
        )
        out = []
        for v in found or []:
            context = getattr(v, "creation_context", None)
            created: Any = getattr(context, "created_at", None)
            stamp = created.isoformat() if isinstance(created, datetime) else str(created or "")
            tags = {str(k): str(t) for k, t in (getattr(v, "tags", None) or {}).items()}
            out.append(RegistryVersionInfo(str(v.version), stamp, tags, *who_created(context)))
        return out

    def call(
        self,
        budget: Budget,
        what: str,
        fn: Callable[[], Any],
        registry: str,
        *,
        roles_settling: bool,
        or_none: bool = False,
    ) -> Any:
        """``fn()`` on registry ``registry`` within ``budget``, its errors translated (a 404: None when ``or_none``)."""
        try:
            return budget.call(what, fn)
        except AzureError as exc:
            if or_none and isinstance(exc, ResourceNotFoundError):
                return None
            raise azure_errors.translate(
                exc,
                what,
                "check the deployment's model id and the policy's environment.registry",
                service="Azure ML",
                where=f"registry {registry}",
                refused=GRANT,
                roles_settling=roles_settling,
            ) from exc


class RegistryShare:
    """An upstream environment's promotion, shared into the registry (see the top of this module)."""

    def __init__(self, client: AzureMLClient, registries: RegistryModels) -> None:
        self.client = client
        self.registries = registries

    def share(self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]) -> dict[str, Any]:
        from azure.ai.ml.entities import Model
        from azure.ai.ml.entities._assets.workspace_asset_reference import WorkspaceAssetReference

        budget = self.client.retry.budget()
        settling = self.client.roles_settling
        live = self.client.call(
            budget,
            f"deployment {endpoint}/{deployment}",
            lambda: self.client.ml.online_deployments.get(deployment, endpoint_name=endpoint),
        )
        ref = str(getattr(live, "model", None) or "")
        if RegistryModelRef.parse(ref) is not None:
            return {"registry": registry, "outcome": "not shared", "why": f"it serves {ref}, a registry's version"}
        match = _WORKSPACE_VERSION.search(ref) or SHORT_ASSET.match(ref)
        if match is None:
            raise PermanentError(f"deployment {endpoint}/{deployment} serves {ref!r}, not a model version to share")
        name, version = match["name"], match["version"]
        target = RegistryModelRef(registry, name, version)
        tags = {**lineage, SOURCE_WORKSPACE: self.client.workspace.id}
        held = self.registries.version(budget, target, roles_settling=settling, or_none=True)
        if held is not None:  # a pass that finds the promotion pending again, or someone else's version
            if (held.tags or {}).get("retrain_decision") == lineage.get("retrain_decision"):
                return {"registry": registry, "id": str(held.id), "outcome": "shared already", "lineage": tags}
            raise PermanentError(
                f"registry {registry} already holds {name}:{version}, not shared by this decision "
                f"({lineage.get('retrain_decision')}); it was not replaced: share it by hand under another version"
            )
        model = self.client.call(
            budget, f"model {name}:{version}", lambda: self.client.ml.models.get(name, version=version)
        )
        if any((model.tags or {}).get(k) != v for k, v in tags.items()):  # the lineage, on the version shared
            tagged = Model(
                name=name,
                version=version,
                path=model.path,
                type=model.type,
                tags={**(model.tags or {}), **tags},
                properties=dict(model.properties or {}),
                description=model.description,
            )
            self.client.call(
                budget,
                f"tagging model {name}:{version} with its lineage",
                lambda: self.client.ml.models.create_or_update(tagged),
            )
        found = self.client.call(
            budget,
            f"workspace {self.client.workspace.name}",
            lambda: self.client.ml.workspaces.get(self.client.workspace.name),
        )
        source = (
            f"azureml://locations/{found.location}/workspaces/{found._workspace_id}/models/{name}/versions/{version}"
        )
        reference = WorkspaceAssetReference(name=name, version=version, asset_id=source)
        shared = self.registries.call(
            budget,
            f"sharing model {name}:{version} into registry {registry}",
            lambda: self.registries.client(registry).models.create_or_update(reference),
            registry,
            roles_settling=settling,
        )
        out = {"registry": registry, "id": str(shared.id), "outcome": "shared", "lineage": tags}
        if any((shared.tags or {}).get(k) != v for k, v in tags.items()):
            out["note"] = "the registry's version does not carry every lineage tag; a downstream gate reads its tags"
        log.info("shared model %s:%s into registry %s as %s", name, version, registry, shared.id)
        return out
