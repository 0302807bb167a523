"""The Freshness port (:class:`handlers.watcher.Freshness`) on Azure ML: the champion an online endpoint
serves, with its model version's creation time (``model.retrain.max_age``), and a data asset's versions
(``retrain.on.data.assets``), as the workspace reports them. Reads only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from function_app.adapters.azureml.candidates import AzureMLCandidates
from function_app.adapters.azureml.client import AzureMLClient
from handlers.freshness import AssetVersion, Champion


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

    def champion(self, endpoint: str) -> Champion | None:
        """The version the endpoint's deployment with the most live traffic serves (a workspace model)."""
        budget = self.client.retry.budget()
        found = self.candidates.live(budget, endpoint, "create it or fix models.<model>.deploy.endpoint")
        if found is None:
            return None
        name, live = found
        model = self.candidates.model_of(budget, live)
        if model is None:
            return None
        return Champion(f"{endpoint}/{name}", AssetVersion(str(model.name), str(model.version), _created(model)))

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
