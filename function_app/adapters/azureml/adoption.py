"""Adopting a candidate deployment (online or batch) of a deploy decision's name: a redelivery, or a worker that died
after creating it, finds it there. It is adopted only when it is provably this decision's (:func:`refuse_foreign`:
its tags, the candidate version, created by this service's identity); otherwise the decision fails naming its creator.
"""

from __future__ import annotations

import logging
from typing import Any

from function_app.adapters.azureml.client import AzureMLClient, who_created
from handlers.errors import PermanentError
from handlers.plans import DeployPlan
from handlers.workspace_ports import ActionResult, CandidateFacts, ModelVersion

log = logging.getLogger(__name__)


def adopted(plan: DeployPlan, job: dict[str, Any], details: dict[str, Any], kind: str = "deployment") -> ActionResult:
    """The answer for a candidate ``kind`` of this decision found already there (a redelivery, or a worker
    that died after creating it): adopted, nothing created again."""
    note = f"{kind} {plan.endpoint}/{plan.deployment} already existed (a redelivery); adopted"
    return ActionResult("submitted", job=job, details={**details, "adopted": True, "note": note})


def refuse_foreign(
    client: AzureMLClient,
    plan: DeployPlan,
    found: Any,
    model: ModelVersion | None,
    kind: str = "deployment",
    unchanged: str = "no traffic is moved",
) -> None:
    """A candidate ``kind`` (a deployment, a batch deployment) of the candidate's name is adopted only
    when it is this decision's: its tags, the candidate model (``model``; None: this decision has
    registered no version yet, so no deployment of it can be its own), created by this service's
    identity. Otherwise a PermanentError naming its creator: nothing is registered or deployed, and
    ``unchanged`` says what is left as it was."""
    tags = {str(k): v for k, v in (getattr(found, "tags", None) or {}).items()}
    props = getattr(found, "properties", None)
    served = str(getattr(props, "model", None) or getattr(found, "model", None) or "")
    creator = getattr(found, "system_data", None) or getattr(found, "creation_context", None)
    wrong = sorted(k for k, v in plan.tags.items() if tags.get(k) != v)
    if wrong:
        why: str | None = f"its tags {', '.join(wrong)} are not this decision's"
    elif model is None:
        why = f"it serves {served[:300]!r}, and this decision has registered no candidate version yet"
    elif served.lower() != str(model.id).lower():
        why = f"it serves {served[:300]!r}, not the candidate {model.label}"
    else:
        why = client.not_created_by_us(creator)
    if why is None:
        return
    who, by = who_created(creator)
    who, by = (who or "an unknown identity")[:200], by or "unknown type"
    log.warning(
        "%s %s/%s exists but is not this decision's (%s); created by %r (%s); not adopted",
        kind,
        plan.endpoint,
        plan.deployment,
        why,
        who,
        by,
    )
    raise PermanentError(
        f"{kind} {plan.endpoint}/{plan.deployment} already exists but was not created by this service for "
        f"this decision ({why}): it was created by {who} ({by}); it is not adopted and {unchanged}. "
        "Someone with access to the workspace created a deployment under the name this decision uses: find "
        "out who, and delete it"
    )


def found_adopted(
    client: AzureMLClient,
    plan: DeployPlan,
    found: Any,
    facts: CandidateFacts,
    job: dict[str, Any],
    details: dict[str, Any],
    kind: str = "deployment",
    unchanged: str = "no traffic is moved",
) -> ActionResult:
    """``found``, the candidate ``kind`` of ``plan``'s name a resumed deploy found before its gate (its worker started
    it, then died before recording it), adopted when it is this decision's (:func:`refuse_foreign`, with the candidate
    version ``facts`` read: the one this decision registered); nothing is registered or created."""
    model = facts.candidate_version
    refuse_foreign(client, plan, found, model, kind, unchanged)
    assert model is not None  # checked: it serves this decision's candidate
    candidate = model.label + (f" (run {plan.run_id})" if plan.run_id else "")
    log.info(
        "%s %s/%s was started before its worker died; adopting it (model=%s)",
        kind,
        plan.endpoint,
        plan.deployment,
        plan.model,
    )
    return adopted(plan, job, {**details, "candidate": candidate})
