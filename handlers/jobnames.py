"""The names of the retraining jobs the service submits.

A job's name is how a redelivered event finds the job its first delivery submitted (and adopts it),
so it must be the same every time for the service. It must also be unguessable to everyone else:
anyone who can submit a job in the workspace and predict the name of the next one could create it
first. So the name is a keyed digest (HMAC-SHA256) of the decision id with a secret only the service
holds (RETRAIN_JOB_NAME_KEY; locally a key file beside the SQLite ledger): deterministic for the
service, unpredictable without the key. Adoption checks provenance as well (the Azure ML backend
adopts only a job its own identity created for this decision): the name keeps a squatter from
getting in the way, the check keeps one from being deployed. A candidate deployment's name is keyed
the same way. A decision resumed after its worker died keeps the name its reservation recorded
(:func:`named_as_reserved`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import replace

from handlers.keys import digest, slug
from handlers.plans import Deploy, Retrain
from handlers.records import DecisionRecord

log = logging.getLogger(__name__)

DIGEST_CHARS = 32  # 128 bits of the HMAC, in hex


def job_name(key: bytes, model: str, decision_id: str) -> str:
    """The pipeline job name of retraining decision ``decision_id`` of ``model`` under ``key``."""
    mac = hmac.new(key, f"retrain-job\n{decision_id}".encode(), hashlib.sha256).hexdigest()
    return f"retrain-{slug(model, 40)}-{mac[:DIGEST_CHARS]}"


DEPLOYMENT_DIGEST_CHARS = 11  # 44 bits: Azure ML allows 32 characters in a deployment name


def deployment_name(key: bytes, planned: str, decision_id: str) -> str:
    """The candidate deployment name of deploy decision ``decision_id`` under ``key``: the plan's name
    (``<model>-<public digest>``) with the digest replaced by a keyed one, so that nobody can create a
    deployment of that name on the endpoint first (the deploy would then fail, naming them)."""
    base = planned.rsplit("-", 1)[0] if "-" in planned else planned
    mac = hmac.new(key, f"candidate-deployment\n{decision_id}".encode(), hashlib.sha256).hexdigest()
    return f"{base}-{mac[:DEPLOYMENT_DIGEST_CHARS]}"


def batch_job_name(key: bytes | None, model: str, transition_id: str, role: str) -> str:
    """The name of the batch job a comparison (transition ``transition_id``) starts for ``role``
    (``candidate`` or ``champion``) under ``key`` (None: a digest of public inputs, tests and tools only),
    so that a pass that finds the comparison pending adopts the job instead of starting a second one."""
    text = f"batch-compare-job\n{transition_id}\n{role}"
    mac = hmac.new(key, text.encode(), hashlib.sha256).hexdigest() if key else digest(text, length=DIGEST_CHARS)
    return f"compare-{slug(model, 40)}-{role}-{mac[:DIGEST_CHARS]}"


def named(decision: Retrain | Deploy, key: bytes | None) -> Retrain | Deploy:
    """``decision`` with its job or candidate deployment named under ``key`` (None: its own name)."""
    if key is None:
        return decision
    if isinstance(decision, Retrain):
        return replace(decision, job=replace(decision.job, name=job_name(key, decision.model, decision.id)))
    deployment = deployment_name(key, decision.plan.deployment, decision.id)
    return replace(decision, plan=replace(decision.plan, deployment=deployment))


def named_as_reserved(decision: Retrain | Deploy, reserved: DecisionRecord | None) -> Retrain | Deploy:
    """A resumed decision keeps the job or deployment name its reservation recorded: the job or
    deployment may exist under it (the worker died after acting), and a key rotated since would
    otherwise name a second one."""
    if reserved is None or reserved.outcome != "reserved":
        return decision
    rendered = reserved.details.get("rendered")
    if not isinstance(rendered, dict):
        return decision
    if isinstance(decision, Retrain):
        name = rendered.get("name") if rendered.get("type") == "pipeline" else None
        if not isinstance(name, str) or not name or name == decision.job.name:
            return decision
        log.info("decision %s resumes under the job name its reservation recorded: %s", decision.id, name[:200])
        return replace(decision, job=replace(decision.job, name=name))
    name = rendered.get("deployment")
    if not isinstance(name, str) or not name or name == decision.plan.deployment:
        return decision
    log.info("decision %s resumes under the deployment name its reservation recorded: %s", decision.id, name[:200])
    return replace(decision, plan=replace(decision.plan, deployment=name))
