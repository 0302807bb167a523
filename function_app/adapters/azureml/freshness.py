"""The Freshness port (:class:`handlers.watcher.Freshness`) on Azure ML: the champion an online endpoint
serves, with its model version's creation time (``model.retrain.max_age``), and a data asset's versions
(``retrain.on.data.assets``), as the workspace reports them. A champion served from the policy's registry
(``azureml://registries/<r>/models/<m>/versions/<v>``, ``environment.registry``) is read from that registry
(its creation time there); one served from any other registry is not read: the endpoint does not choose
which registry the service trusts (the gate's rule, :meth:`AzureMLCandidates.champion_in`). Also which version
of a data asset or a model is its latest, and who created a version of either (:mod:`handlers.pins`,
:mod:`handlers.creators`). Reads only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from function_app.adapters.azureml.candidates import AzureMLCandidates
from function_app.adapters.azureml.client import AzureMLClient, who_created
from function_app.adapters.azureml.registry import RegistryModelRef
from handlers.creators import THINGS as CREATED_THINGS
from handlers.creators import RunCreator
from handlers.errors import PermanentError
from handlers.freshness import AssetVersion, Champion
from handlers.pins import DATA, MODEL, THINGS

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
        return self._latest(DATA, name, lambda: self.client.ml.data.get(name, label="latest"))

    def latest_model(self, name: str) -> str:
        """The version of model ``name`` a job's ``azureml:<name>@latest`` input would read: what
        ``models.get(name, label="latest")`` gives (the model's versions listed newest created first, one: Azure ML's
        latest is the most recently created version), as azure-ai-ml resolves the label when it submits a job."""
        return self._latest(MODEL, name, lambda: self.client.ml.models.get(name, label="latest"))

    def _latest(self, kind: str, name: str, get: Callable[[], Any]) -> str:
        from azure.ai.ml.exceptions import ValidationException

        thing = THINGS[kind]
        fix = f"register a version of it, or fix the input that reads azureml:{name}@latest in models.<model>.retrain.inputs"
        try:
            asset = self.client.call(
                self.client.retry.budget(), f"the latest version of {thing} {name!r}", get, fix, or_none=True
            )
        except PermanentError as exc:
            if not isinstance(exc.__cause__, ValidationException):  # the SDK's "Asset ... does not exist": none
                raise
            asset = None
        if asset is None:
            raise PermanentError(
                f"the workspace has no {thing} {name!r} for an input that reads its latest version; register a "
                "version of it, or fix models.<model>.retrain.inputs"
            )
        return str(asset.version)

    def data_creator(self, name: str, version: str) -> RunCreator:
        """Who created data asset version ``name:version``, as its ``systemData`` says (``creation_context``): a
        person's principal name (``createdBy`` with an ``@``, type User) is matched on; anything else (a display
        name, an application's client id) only shown (:mod:`handlers.creators`). A refusal or no such version:
        ``problem`` says so."""
        return self._creator(DATA, name, version, lambda: self.client.ml.data.get(name, version=version))

    def model_creator(self, name: str, version: str) -> RunCreator:
        """Who created model version ``name:version``, as its ``systemData`` says, read as :meth:`data_creator`
        reads a data asset version's."""
        return self._creator(MODEL, name, version, lambda: self.client.ml.models.get(name, version=version))

    def _creator(self, kind: str, name: str, version: str, get: Callable[[], Any]) -> RunCreator:
        label, thing = f"{name}:{version}", CREATED_THINGS[kind]
        try:
            asset = self.client.call(
                self.client.retry.budget(), f"reading who created {thing} {label}", get, or_none=True
            )
        except PermanentError as exc:
            return RunCreator(label, problem=str(exc)[:300], of=kind)
        if asset is None:
            return RunCreator(label, problem=f"the workspace has no {thing} {label}", of=kind)
        by, by_type = who_created(getattr(asset, "creation_context", None))
        person = by_type.lower() == "user" and "@" in by
        return RunCreator(label, upn=by if person else "", name=by if by and not person else "", of=kind)
