"""The names of the retraining jobs the service submits.

A job's name is how a redelivered event finds the job its first delivery submitted (and adopts it),
so it must be the same every time for the service. It must also be unguessable to everyone else:
anyone who can submit a job in the workspace and predict the name of the next one could create it
first. So the name is a keyed digest (HMAC-SHA256) of the decision id with a secret only the service
holds (RETRAIN_JOB_NAME_KEY; locally a key file beside the SQLite ledger): deterministic for the
service, unpredictable without the key. Adoption checks provenance as well (the Azure ML backend
adopts only a job its own identity created for this decision): the name keeps a squatter from
getting in the way, the check keeps one from being deployed. A candidate deployment's name is keyed
the same way.
"""

from __future__ import annotations

import hashlib
import hmac

from handlers.keys import slug

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
