"""The Freshness port (:class:`handlers.watcher.Freshness`) on Azure ML: the champion an online endpoint
serves, with its model version's creation time (``model.retrain.max_age``), and a data asset's versions
(``retrain.on.data.assets``), as the workspace reports them. A champion served from the policy's registry
(``azureml://registries/<r>/models/<m>/versions/<v>``, ``environment.registry``) is read from that registry
(its creation time there); one served from any other registry is not read: the endpoint does not choose
which registry the service trusts (the gate's rule, :meth:`AzureMLCandidates.champion_in`). Reads only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from function_app.adapters.azureml.candidates import AzureMLCandidates
from function_app.adapters.azureml.client import AzureMLClient
from function_app.adapters.azureml.registry import RegistryModelRef
from handlers.creators import DATA, RunCreator
from handlers.errors import PermanentError
from handlers.freshness import AssetVersion, Champion

log = logging.getLogger(__name__)


def _created(asset: Any) -> datetime | None:
    """An SDK asset's creation time (its ``systemData.createdAt``, in ``creation_context``), in UTC."""
    raw = getattr(getattr(asset, "creation_context", None), "created_at", None)
    if isinstance(raw, str):
        raw = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if not isinstance(raw, datetime):
        return None
    return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)


class AzureMLFreshness:
    def __init__(self, client: AzureMLClient, candidates: AzureMLCandidates) -> None:
        self.client = client
        self.candidates = candidates

    def champion(self, endpoint: str, registry: str | None = None) -> Champion | None:
        """The version the endpoint's deployment with the most live traffic serves: a workspace model, or a
        version of ``registry`` (the policy's), read there."""
        return self.served(endpoint, registry)[0]

    def served(self, endpoint: str, registry: str | None = None) -> tuple[Champion | None, Any | None]:
        """:meth:`champion`, and the SDK's model version read for it (None: not read)."""
        budget = self.client.retry.budget()
        found = self.candidates.live(budget, endpoint, "create it or fix models.<model>.deploy.endpoint")
        if found is None:
            return None, None
        name, live = found
        where = f"{endpoint}/{name}"
        ref = RegistryModelRef.parse(str(getattr(live, "model", None) or ""))
        if ref is not None:
            return self._registry_champion(where, ref, registry)
        model = self.candidates.model_of(budget, live)
        if model is None:
            return None, None
        return Champion(where, AssetVersion(str(model.name), str(model.version), _created(model))), model

    def _registry_champion(
        self, where: str, ref: RegistryModelRef, registry: str | None
    ) -> tuple[Champion, Any | None]:
        """A champion served from a registry: read from it when it is the policy's, else not read (why, in ``unread``)."""
        if registry is None or ref.registry.casefold() != registry.casefold():
            trusted = (
                f"the policy reads registry {registry!r} only" if registry else "the policy names no registry for it"
            )
            why = (
                f"{where} serves {ref}, and {trusted} (models.<model>.environment.registry, role downstream): "
                "its creation time and lineage are not read"
            )
            return Champion(where, AssetVersion(ref.name, ref.version, None), ref.registry, unread=why), None
        budget = self.client.retry.budget()
        model = self.candidates.registries.version(budget, ref, roles_settling=self.client.roles_settling, or_none=True)
        if model is None:
            why = f"{where} serves {ref}, which the registry does not hold"
            log.warning("champion of %s: %s", where, why)
            return Champion(where, AssetVersion(ref.name, ref.version, None), ref.registry, unread=why), None
        return Champion(where, AssetVersion(ref.name, ref.version, _created(model)), ref.registry), model

    def data_versions(self, name: str) -> list[AssetVersion]:
        """Every active version of the data asset ``name`` (the list is paged; all pages are read)."""
        budget = self.client.retry.budget()
        versions = self.client.call(
            budget,
            f"versions of data asset {name!r}",
            lambda: list(self.client.ml.data.list(name=name)),
            "create the data asset, or fix models.<model>.retrain.on.data.assets",
            or_none=True,
        )
        return [AssetVersion(str(v.name), str(v.version), _created(v)) for v in versions or []]

    def latest_data(self, name: str) -> str:
        """The version of data asset ``name`` a job's ``azureml:<name>@latest`` input would read: what
        ``data.get(name, label="latest")`` gives (the asset's container names its latest version, then that version
        is read), as azure-ai-ml resolves the label itself when it submits a job (:mod:`handlers.pins`)."""
        data = self.client.call(
            self.client.retry.budget(),
            f"the latest version of data asset {name!r}",
            lambda: self.client.ml.data.get(name, label="latest"),
            f"register a version of it, or fix the input that reads azureml:{name}@latest in models.<model>.retrain.inputs",
            or_none=True,
        )
        if data is None:
            raise PermanentError(
                f"the workspace has no data asset {name!r} for an input that reads its latest version; register a "
                "version of it, or fix models.<model>.retrain.inputs"
            )
        return str(data.version)

    def data_creator(self, name: str, version: str) -> RunCreator:
        """Who created data asset version ``name:version``, as its ``systemData`` says (``creation_context``): a
        person's principal name (``createdBy`` with an ``@``, type User) is matched on; anything else (a display
        name, an application's client id) only shown (:mod:`handlers.creators`). A refusal or no such version:
        ``problem`` says so."""
        label = f"{name}:{version}"
        try:
            data = self.client.call(
                self.client.retry.budget(),
                f"reading who created data asset version {label}",
                lambda: self.client.ml.data.get(name, version=version),
                or_none=True,
            )
        except PermanentError as exc:
            return RunCreator(label, problem=str(exc)[:300], of=DATA)
        if data is None:
            return RunCreator(label, problem=f"the workspace has no data asset version {label}", of=DATA)
        context = getattr(data, "creation_context", None)
        kind = getattr(context, "created_by_type", None)  # the REST client's CreatedByType, a str enum
        by, kind = str(getattr(context, "created_by", None) or ""), str(getattr(kind, "value", kind) or "")
        person = kind.lower() == "user" and "@" in by
        return RunCreator(label, upn=by if person else "", name=by if by and not person else "", of=DATA)
