"""The workspace's assets in the fake ARM: computes, components, data assets and models (seeded by a
test, listed, read and registered through the SDK)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode, urlparse

from tests.fake_arm_common import ARM_HOST, CREATED, PROVIDER, Call, system_data
from tests.fake_http import USER_CLAIMS, Answer, Refusal, Unexpected


class Assets:
    """Mixed into :class:`tests.fake_arm.FakeArm` (``self`` is the fake, its stores and its clock):
    computes, components, data assets and model versions."""

    def add_compute(self, name: str) -> None:
        self.computes[name] = {
            "id": self.arm_id("computes", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/computes",
            "location": self.location,
            "properties": {"computeType": "AmlCompute", "provisioningState": "Succeeded", "properties": {}},
        }

    def add_component(
        self, name: str, version: str, *, kind: str = "pipeline", inputs: dict[str, str] | None = None
    ) -> None:
        spec = {
            "name": name,
            "version": version,
            "type": kind,
            "display_name": name,
            "inputs": {k: {"type": t} for k, t in (inputs or {}).items()},
            "outputs": {"model": {"type": "custom_model"}},
        }
        if kind == "pipeline":
            spec["jobs"] = {}
        self.components[(name, version)] = {
            "id": self.arm_id("components", name, "versions", version),
            "name": version,
            "type": f"{PROVIDER}/workspaces/components/versions",
            "systemData": {"createdAt": f"2026-11-{10 + len(self.components):02d}T09:00:00Z"},
            "properties": {
                "componentSpec": spec,
                "isAnonymous": False,
                "isArchived": False,
                "properties": {},
                "tags": {},
            },
        }

    def add_data(
        self,
        name: str,
        version: str,
        *,
        kind: str = "mltable",
        uri: str | None = None,
        created: str = CREATED,
        created_by: dict[str, Any] | None = None,
    ) -> None:
        """A data asset version, created by a token of ``created_by`` (default: a person with a workspace
        account), whose ``systemData`` names its creator as ARM's does (a person by principal name)."""
        self.data[(name, version)] = {
            "id": self.arm_id("data", name, "versions", version),
            "name": version,
            "type": f"{PROVIDER}/workspaces/data/versions",
            "systemData": system_data(USER_CLAIMS if created_by is None else created_by, created),
            "properties": {
                "dataType": kind,
                "dataUri": uri or f"azureml://datastores/workspaceblobstore/paths/{name}/{version}/",
                "isAnonymous": False,
                "isArchived": False,
                "properties": {},
                "tags": {},
            },
        }

    def add_model(
        self,
        name: str,
        version: str,
        *,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        kind: str = "custom_model",
        job_name: str | None = None,
        created: str = CREATED,
        created_by: dict[str, Any] | None = None,
    ) -> str:
        """A model version; ``created_by``: the token that registered it (its ``systemData`` then names its creator,
        as :meth:`add_data`'s does), else no creator is recorded."""
        self.models[(name, version)] = {
            "id": self.arm_id("models", name, "versions", version),
            "name": version,
            "type": f"{PROVIDER}/workspaces/models/versions",
            "systemData": {"createdAt": created} if created_by is None else system_data(created_by, created),
            "properties": {
                "modelType": kind,
                "flavors": {},
                "modelUri": f"azureml://datastores/workspaceblobstore/paths/models/{name}/{version}/",
                "jobName": job_name,
                "tags": dict(tags or {}),
                "properties": dict(properties or {}),
                "isAnonymous": False,
                "isArchived": False,
            },
        }
        return str(self.models[(name, version)]["id"])

    def _get_compute(self, call: Call, name: str) -> Answer:
        return 200, {}, self._found(self.computes.get(name), f"compute {name}")

    def _get_component(self, call: Call, name: str, version: str) -> Answer:
        return 200, {}, self._found(self.components.get((name, version)), f"component {name}:{version}")

    def _list_components(self, call: Call, name: str) -> Answer:
        versions = [v for (n, _), v in self.components.items() if n == name]
        versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse="desc" in call.query.get("$orderBy", ""))
        return 200, {}, {"value": versions[: int(call.query.get("$top", len(versions) or 1))]}

    def _get_data_container(self, call: Call, name: str) -> Answer:
        """Data Containers - Get: its ``latestVersion`` is the version created last ("the latest version is defined
        as the most recently created version of the asset under a given name", CLI (v2) core YAML syntax; azure-ai-ml
        resolves ``@latest`` from it), whatever it is named; created at the same moment, the highest number."""
        versions = [(v["systemData"]["createdAt"], k) for (n, k), v in self.data.items() if n == name]
        if not versions:
            raise Refusal(404, "UserError", f"Could not find data asset {name} in workspace {self.workspace}")
        latest = max(versions, key=lambda cv: (cv[0], cv[1].isdigit(), int(cv[1]) if cv[1].isdigit() else 0))[1]
        numbers = [int(k) for _, k in versions if k.isdigit()]
        return (
            200,
            {},
            {
                "id": self.arm_id("data", name),
                "name": name,
                "properties": {
                    "latestVersion": latest,
                    "nextVersion": str(max(numbers, default=0) + 1),
                    "isArchived": False,
                },
            },
        )

    def _list_data(self, call: Call, name: str) -> Answer:
        """Data Versions - List: the versions of one data asset, newest first, ``DATA_PAGE`` a page, the
        next page behind ``nextLink`` (a ``$skipToken``); archived versions only when ``listViewType`` asks
        for them. No such asset: an empty list (a list is not a lookup)."""
        view = call.query.get("listViewType", "ActiveOnly")
        if view not in ("ActiveOnly", "ArchivedOnly", "All"):
            raise Unexpected(f"listViewType {view}")
        versions = [
            v
            for (n, _), v in self.data.items()
            if n == name and (view == "All" or v["properties"]["isArchived"] == (view == "ArchivedOnly"))
        ]
        versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse=True)
        start = int(call.query.get("$skipToken", "0") or 0)
        page = versions[start : start + self.data_page]
        out: dict[str, Any] = {"value": page}
        if start + self.data_page < len(versions):
            query = urlencode({**call.query, "$skipToken": str(start + self.data_page)})
            out["nextLink"] = f"https://{ARM_HOST}{urlparse(call.url).path}?{query}"
        return 200, {}, out

    def _get_data(self, call: Call, name: str, version: str) -> Answer:
        return 200, {}, self._found(self.data.get((name, version)), f"data asset {name}:{version}")

    def _put_data(self, call: Call, name: str, version: str) -> Answer:
        """Registering a data asset version: an existing version with the same path is accepted as
        it is; a changed path is refused ("Asset paths cannot be updated")."""
        props = (call.body or {}).get("properties") or {}
        uri, kind = str(props.get("dataUri") or ""), str(props.get("dataType") or "")
        if not uri or not kind:
            raise Unexpected("a data version needs dataType and dataUri")
        existing = self.data.get((name, version))
        if existing is not None:
            if existing["properties"]["dataUri"].rstrip("/") != uri.rstrip("/"):
                raise Refusal(400, "UserError", "Asset paths cannot be updated.")
            return 200, {}, existing
        self.add_data(name, version, kind=kind, uri=uri)
        self.data[(name, version)]["systemData"] = self._created_by(call)
        return 201, {}, self.data[(name, version)]

    def _get_model_container(self, call: Call, name: str) -> Answer:
        versions = sorted((int(v) for (n, v) in self.models if n == name and v.isdigit()), reverse=True)
        if not versions:
            raise Refusal(404, "UserError", f"Could not find model {name} in workspace {self.workspace}")
        return (
            200,
            {},
            {
                "id": self.arm_id("models", name),
                "name": name,
                "properties": {
                    "latestVersion": str(versions[0]),
                    "nextVersion": str(versions[0] + 1),
                    "isArchived": False,
                },
            },
        )

    def _list_models(self, call: Call, name: str) -> Answer:
        """Model Versions - List: newest registered first; ``$orderBy`` ``createdtime desc`` (azure-ai-ml's
        ``models.get(name, label="latest")`` asks it with ``$top`` 1: Azure ML's latest is the most recently created
        version, whatever it is named) orders by ``systemData.createdAt``, the newest registered first among equals."""
        versions = [v for (n, _), v in self.models.items() if n == name]
        if not versions:
            raise Refusal(404, "UserError", f"Could not find model {name} in workspace {self.workspace}")
        order = call.query.get("$orderBy", "")
        if order not in ("", "createdtime desc", "createdtime asc"):
            raise Unexpected(f"$orderBy {order}")
        newest = list(reversed(versions))
        if order:
            newest.sort(key=lambda v: str(v["systemData"]["createdAt"]), reverse=order.endswith("desc"))
        top = int(call.query.get("$top", len(versions)))
        return 200, {}, {"value": newest[:top]}

    def _get_model(self, call: Call, name: str, version: str) -> Answer:
        return 200, {}, self._found(self.models.get((name, version)), f"model {name}:{version}")

    def _put_model(self, call: Call, name: str, version: str) -> Answer:
        props = (call.body or {}).get("properties") or {}
        uri = str(props.get("modelUri") or "")
        if not props.get("modelType") or not uri:
            raise Unexpected("a model version needs modelType and modelUri")
        existing = self.models.get((name, version))
        if existing is not None:  # re-registering: the same path is accepted, a changed one refused
            if existing["properties"]["modelUri"].rstrip("/") != uri.rstrip("/"):
                raise Refusal(400, "UserError", "Asset paths cannot be updated.")
            existing["properties"]["tags"] = dict(props.get("tags") or {})
            return 200, {}, existing
        job_name = None
        job_output = re.match(r"^azureml://jobs/([^/]+)/outputs/([^/]+)$", uri)
        if job_output:
            job_name, output = job_output.groups()
            job = self.jobs.get(job_name)
            if job is None or output not in (job["properties"].get("outputs") or {}):
                raise Refusal(400, "UserError", f"Job {job_name} has no output named {output}")
        model_id = self.add_model(
            name,
            version,
            tags=props.get("tags"),
            properties=props.get("properties"),
            kind=props["modelType"],
            job_name=job_name,
        )
        self.models[(name, version)]["properties"]["modelUri"] = uri
        self.models[(name, version)]["systemData"] = self._created_by(call)
        assert model_id
        return 201, {}, self.models[(name, version)]
