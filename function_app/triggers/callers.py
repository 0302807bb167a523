"""Who asked: the caller of a manual request, as the platform vouches for it.

With App Service authentication (Entra ID sign-in) in front of the app, the platform passes the
signed-in principal as ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON with its claims), ``-NAME`` and ``-ID``.
Whether the platform strips copies of these headers that a client sends itself is not documented
(AZURE-FACTS.md), so they are trusted only when ``RETRAIN_APP_SERVICE_AUTH`` says authentication is
on and App Service says its authentication is on (``WEBSITE_AUTH_ENABLED=True``, set by the platform);
then a manual request needs a principal with the operator app role (``RETRAIN_OPERATOR_ROLE``).
Otherwise the caller is whoever holds a function key, and is recorded as such.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from handlers.errors import Forbidden, Unauthorized

PRINCIPAL = "x-ms-client-principal"
PRINCIPAL_NAME = "x-ms-client-principal-name"
PRINCIPAL_ID = "x-ms-client-principal-id"
FUNCTION_KEY = {"kind": "function key"}


def _claims(encoded: str) -> tuple[str, list[str]]:
    """The principal's auth type and app roles, from the base64 JSON the platform sends."""
    try:
        data = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized(f"the {PRINCIPAL} header is not base64 JSON ({exc}); sign in again") from exc
    if not isinstance(data, Mapping):
        raise Unauthorized(f"the {PRINCIPAL} header holds no principal; sign in again")
    role_type = str(data.get("role_typ") or "roles")
    raw = data.get("claims")
    claims = raw if isinstance(raw, list) else []
    roles = [
        str(c.get("val"))
        for c in claims
        if isinstance(c, Mapping) and c.get("typ") in (role_type, "roles", "role") and c.get("val")
    ]
    return str(data.get("auth_typ") or "aad"), roles


def caller_of(
    headers: Mapping[str, str], *, app_service_auth: bool, operator_role: str, platform_sign_in: bool
) -> dict[str, Any]:
    """The caller to record. With authentication on: the signed-in principal (name, object id and app
    roles), which must hold ``operator_role`` (Unauthorized without a principal, Forbidden without the role). Authentication
    said on (``app_service_auth``) while the platform's is off (``platform_sign_in``): the headers could
    be anyone's, so no request passes (Forbidden), rather than trusting them or dropping the role check."""
    if not app_service_auth:
        return dict(FUNCTION_KEY)
    if not platform_sign_in:
        raise Forbidden(
            "RETRAIN_APP_SERVICE_AUTH=true but App Service authentication is off (WEBSITE_AUTH_ENABLED is not True), "
            "so no signed-in principal can be trusted; turn sign-in on or set RETRAIN_APP_SERVICE_AUTH=false "
            "(docs/security.md, Entra ID sign-in)"
        )
    lowered = {k.lower(): v for k, v in headers.items()}
    encoded = lowered.get(PRINCIPAL)
    if not encoded:
        raise Unauthorized(
            "App Service authentication is on (RETRAIN_APP_SERVICE_AUTH=true) and this request carries no "
            "signed-in principal; sign in with Entra ID (see docs/security.md)"
        )
    provider, roles = _claims(encoded)
    name, principal_id = lowered.get(PRINCIPAL_NAME, ""), lowered.get(PRINCIPAL_ID, "").strip()
    if not principal_id:  # the platform sends it with every principal; a name alone is no identity (four eyes)
        raise Unauthorized(
            f"the signed-in principal comes without its id ({PRINCIPAL_ID} header), so it cannot be told from "
            "another; sign in with Entra ID again (docs/security.md, Entra ID sign-in)"
        )
    if operator_role not in roles:
        raise Forbidden(
            f"{name or principal_id or 'the caller'} lacks the app role {operator_role!r} that manual requests "
            "need; an owner of the app registration assigns it (docs/security.md, Entra ID sign-in)"
        )
    # its app roles too, for a policy's approver_role (space-separated: an app role's value has no spaces)
    held = " ".join(sorted({r for r in roles if r.isprintable() and " " not in r and len(r) <= 120})[:20])
    return {"kind": "principal", "provider": provider, "name": name[:256], "id": principal_id[:128], "roles": held}
