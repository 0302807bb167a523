"""A downstream (prod) environment picks up new versions of its models from the registry
(``models.<m>.environment`` with ``role: downstream`` and ``upstream``; docs/environments.md).

Two ways to learn of a version, one decision: the upstream (dev) service's promotion notification, a
CloudEvent delivered from its notification topic by an Event Grid subscription (:data:`handlers.signals.
UPSTREAM_PROMOTED`, read by :mod:`handlers.envelopes` into a :class:`RegistryVersion`), and, because an
event can be lost and a registry publishes no events, the reconciler polling the registry
(:class:`RegistryPoll`). Both make the deploy decision keyed by the version
(:func:`handlers.plans.registry_decision_id`), so a redelivery, a second notification and the poll all
answer with the one record: a version is picked up once.

Nothing in a notification is trusted: its ``source`` must be the policy's ``upstream`` (anyone who can
publish to a topic, or post to the webhook with a key, writes the source they like), the registry and
model it names must be the policy's, and what it names is only a hint: the executor reads the version
again from the registry (:meth:`handlers.workspace_ports.Deployments.candidate_facts`), whose lineage must name the
upstream workspace, and the gate judges it against the prod champion like any candidate.

Nor is anything in the version itself but who created it: its lineage tag and its metrics are tags,
anyone's who holds ``registries/assets/write`` on the registry. The registry records the version's creator
(``systemData.createdBy`` / ``createdByType``, as ARM records a creator: an application or managed identity
by its client id), which no writer chooses; a version is rolled out only when that is the upstream service's
identity (``environment.upstream_identity``: :func:`not_shared_by_upstream`), else a recorded skip naming
who created it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from handlers import starts
from handlers.plans import Decision, Deploy, deploy_plan, registry_decision_id, skip
from handlers.records import DecisionRecord
from handlers.signals import EVENT_GRID, RECONCILER_CHANNEL, RegistryVersion, Trigger

if TYPE_CHECKING:
    from handlers.executor import Executor
    from handlers.policy import Policy
    from handlers.ports import Ledger

log = logging.getLogger(__name__)

SOURCE_WORKSPACE = "retrain_source_workspace"  # the lineage tag naming the workspace a version came from
POLLED = "RegistryVersion.poll"  # the event type of the reconciler's trigger of a version it found


def _key(resource_id: str) -> str:
    return resource_id.strip().strip("/").lower()


@dataclass(frozen=True)
class RegistryVersionInfo:
    """One version of a model in a registry, as the registry lists it: its tags (the lineage), when it
    was created (ISO, as the registry says it) and who created it (``systemData.createdBy`` and
    ``createdByType``: the registry's record, which no writer chooses)."""

    version: str
    created_at: str
    tags: Mapping[str, str] = field(default_factory=dict)
    created_by: str = ""
    created_by_type: str = ""


class RegistryVersions(Protocol):
    """The versions of a registry's model (the Azure ML backend: ``MLClient(registry_name=...)``'s
    ``models.list``). Raises TransientError / PermanentError like every read."""

    def registry_versions(self, registry: str, model: str) -> list[RegistryVersionInfo]: ...


def from_upstream(info: RegistryVersionInfo, upstream: str) -> bool:
    """Whether the version's lineage names ``upstream`` as the workspace it came from."""
    return _key(str(info.tags.get(SOURCE_WORKSPACE) or "")) == _key(upstream)


SERVICE_CREATORS = frozenset({"managedidentity", "application"})  # createdByType of a service's identity


def not_shared_by_upstream(created_by: str, created_by_type: str, identity: Sequence[str], model: str) -> str | None:
    """Why a registry version whose creator the registry records as ``created_by`` of type ``created_by_type``
    was not shared by the upstream service whose identity's ids are ``identity`` (its
    ``environment.upstream_identity``), or None when it was (pure)."""
    key = f"models.{model}.environment.upstream_identity"
    who = f"{created_by[:200] or 'no one'} ({created_by_type[:40] or 'no type'})"
    if not identity:
        return f"the policy names no upstream identity ({key}) to tell the upstream's versions by; the registry says {who} created it"
    if created_by_type.casefold() not in SERVICE_CREATORS or created_by.strip().casefold() not in {
        i.casefold() for i in identity
    }:
        return (
            f"the registry records {who} as its creator, not the upstream service's identity ({key}: "
            f"{', '.join(identity)}); its tags are anyone's who can write the registry"
        )
    return None


def _order(info: RegistryVersionInfo) -> tuple[str, int, str]:
    """Created last is newest; a numeric version breaks a tie."""
    return (info.created_at, int(info.version) if info.version.isdigit() else -1, info.version)


def newest(versions: Sequence[RegistryVersionInfo], upstream: str) -> RegistryVersionInfo | None:
    """The newest version whose lineage names ``upstream``, or None."""
    return max((v for v in versions if from_upstream(v, upstream)), key=_order, default=None)


def to_poll(
    versions: Sequence[RegistryVersionInfo], upstream: str, identity: Sequence[str], model: str
) -> list[RegistryVersionInfo]:
    """The versions the poll decides, in order (pure): the newest version with ``upstream``'s lineage that
    someone other than the upstream service's ``identity`` created, when it is newer than the newest the
    upstream service created (a recorded skip that names its creator), then that newest one. A version
    anyone registers with the upstream's lineage tag so hides no version the upstream shared before it.
    With no identity to tell them by, the newest with the lineage (its skip says so)."""
    lineage = [v for v in versions if from_upstream(v, upstream)]
    if not identity:
        return [v for v in (newest(lineage, upstream),) if v is not None]
    theirs = {
        v.version for v in lineage if not_shared_by_upstream(v.created_by, v.created_by_type, identity, model) is None
    }
    shared = max((v for v in lineage if v.version in theirs), key=_order, default=None)
    forged = max(
        (v for v in lineage if v.version not in theirs and (shared is None or _order(v) > _order(shared))),
        key=_order,
        default=None,
    )
    return [v for v in (forged, shared) if v is not None]


def on_registry_version(signal: RegistryVersion, policy: Policy) -> list[Decision]:
    """The deploy decision of a registry version to pick up, or a skip that says why not (pure)."""
    trigger, model, registry, version = signal.trigger, signal.model, signal.registry, signal.version
    what = f"version {version} of model {model} in registry {registry}"
    mp = policy.models.get(model)
    if mp is None:
        return [skip(trigger, f"{what}: the policy has no model {model!r}; not picked up")]
    env = mp.environment
    if env is None or env.role != "downstream" or env.upstream is None:
        return [
            skip(
                trigger,
                f"{what}: not picked up: models.{model}.environment names no upstream to pick up from (set role: "
                "downstream and upstream: the dev workspace's resource id)",
                model,
            )
        ]
    if registry.casefold() != env.registry.casefold():
        return [
            skip(
                trigger,
                f"{what}: not picked up: the policy reads registry {env.registry!r} only "
                f"(models.{model}.environment.registry)",
                model,
            )
        ]
    if trigger.channel == EVENT_GRID and _key(trigger.source) != _key(env.upstream):
        return [
            skip(
                trigger,
                f"{what}: not picked up: the notification's source {trigger.source[:300]!r} is not the upstream "
                f"the policy names (models.{model}.environment.upstream: {env.upstream}); only that service's "
                "promotions are picked up",
                model,
                source=trigger.source[:300],
            )
        ]
    did = registry_decision_id(model, env.registry, version)
    plan = deploy_plan(model, mp, did, "registry", None, version)
    told = (
        f"told by the upstream's promotion {signal.promotion or '(unnamed)'}"
        if trigger.channel == EVENT_GRID
        else "found by polling the registry"
    )
    return [Deploy(did, model, f"{what}, {told}; evaluating it against the champion", trigger, plan)]


class RegistryPoll:
    """The reconciler's poll of the registries the policy's downstream models pick up from: per model,
    the newest version its upstream shared, when no decision was made for it yet, is carried out as its
    notification would have been (the same decision), through :func:`handlers.starts.start` as every
    decision the reconciler makes: a guard's refusal (a rollout in flight) is recorded, and the next pass
    tries again; a version decided already, or reserved by a worker, is left.

    A model is polled on every pass, or, with ``environment.poll_every``, at most once per that interval
    per worker (when this worker last listed it is kept in memory: a worker started afresh polls on its
    first pass; that costs a read, never a pickup, since the decision is keyed by the version)."""

    def __init__(self, policy: Policy, ledger: Ledger, executor: Executor, registry: RegistryVersions) -> None:
        self.policy = policy
        self.ledger = ledger
        self.executor = executor
        self.registry = registry
        self.polled: dict[str, datetime] = {}  # when this worker last listed each model's versions (efficiency only)

    def watched(self) -> list[tuple[str, str, str]]:
        """(model, registry, upstream) of each model that picks up from a registry."""
        out = []
        for model, mp in self.policy.models.items():
            env = mp.environment
            if env is not None and env.role == "downstream" and env.upstream is not None:
                out.append((model, env.registry, env.upstream))
        return out

    def due(self, model: str, now: datetime) -> bool:
        """Whether ``model``'s registry is polled in this pass (its ``environment.poll_every`` has passed)."""
        env = self.policy.models[model].environment
        every = env.poll_every if env is not None else None
        last = self.polled.get(model)
        return every is None or last is None or now - last >= every

    def poll(self, model: str, registry: str, upstream: str, now: datetime) -> list[DecisionRecord]:
        """Pick up ``model``'s newest version in ``registry`` that ``upstream`` shared, if it is new, and
        record a skip of a newer one someone else registered with its lineage (:func:`to_poll`); the
        records of what came of them (none: nothing new, or not due yet: :meth:`due`)."""
        if not self.due(model, now):
            return []
        env = self.policy.models[model].environment
        identity = list(env.upstream_identity or []) if env is not None else []
        found = to_poll(self.registry.registry_versions(registry, model), upstream, identity, model)
        self.polled[model] = now
        return [r for r in (self._pick(model, registry, v, now) for v in found) if r is not None]

    def _pick(self, model: str, registry: str, found: RegistryVersionInfo, now: datetime) -> DecisionRecord | None:
        """The decision of one version found, carried out once (None: decided already, or reserved)."""
        trigger = Trigger(
            f"azureml://registries/{registry}", f"{model}/{found.version}", POLLED, channel=RECONCILER_CHANNEL
        )
        [decision] = on_registry_version(RegistryVersion(trigger, registry, model, found.version), self.policy)
        if not isinstance(decision, Deploy):  # the policy changed between the two reads: nothing to do
            return None
        record, status = starts.start(self.executor, self.ledger, decision, now)
        if status in ("made", "reserved"):  # picked up already (a reserved one is the reconciler's to resume)
            return None
        log.info(
            "registry poll model=%s version %s of %s: %s (%s)",
            model,
            found.version,
            registry,
            record.outcome,
            record.id,
        )
        return record
