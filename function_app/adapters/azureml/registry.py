"""Model versions of an Azure ML registry (the policy's ``environment.registry``), read with an
``MLClient`` built for the registry (``MLClient(credential, registry_name=...)``): once per registry
per worker, on first use. Building it asks Azure ML's registry discovery service where the registry
lives (its subscription, resource group and region); its model versions are then read from the
registry's regional endpoint (azure-ai-ml's ``_registry_utils``: ``.../registries/<r>/models/<m>/
versions/<v>``, api-version ``2021-10-01-dataplanepreview``).

What the service needs on the registry: ``registries/read`` and ``registries/assets/read``
(infra/modules/registry-access.bicep assigns a custom role with exactly these; AzureML Registry User
would also let it write and delete every asset of the registry).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError

from function_app.adapters import azure_errors
from function_app.retry import Budget
from handlers.errors import PermanentError

_MODEL = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE
)
GRANT = (
    "grant the function app's managed identity the registry reader role on the registry "
    "(infra/modules/registry-access.bicep: registries/read and registries/assets/read)"
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

    def _client(self, registry: str) -> Any:
        key = registry.casefold()
        with self._lock:
            if key not in self._clients:
                if self._build is None:
                    raise PermanentError(
                        f"registry {registry}: this backend reads no registry (build it with AzureMLActions.from_settings)"
                    )
                self._clients[key] = self._build(registry)  # asks the discovery service where the registry is
            return self._clients[key]

    def version(self, budget: Budget, ref: RegistryModelRef, *, roles_settling: bool) -> Any:
        """The registry's model version ``ref`` (the SDK's ``Model``: its tags, properties, id)."""
        what = f"reading model {ref}"
        try:
            return budget.call(what, lambda: self._client(ref.registry).models.get(ref.name, version=ref.version))
        except AzureError as exc:
            raise azure_errors.translate(
                exc,
                what,
                "check the deployment's model id and the policy's environment.registry",
                service="Azure ML",
                where=f"registry {ref.registry}",
                refused=GRANT,
                roles_settling=roles_settling,
            ) from exc
