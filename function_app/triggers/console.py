"""The operator console: one page, served by the app itself (no build step, no CDN).

``GET /api/console`` answers the page with its stylesheet and script inlined from the package
(function_app/console/), so that the function key in the page's own URL (``?code=``), or the
Entra ID session, is all it needs. The script reads the app's JSON routes and calls its manual
routes; a Content-Security-Policy with a nonce per response lets nothing else run or load.
"""

from __future__ import annotations

import logging
import secrets
from functools import cache
from pathlib import Path

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

ASSETS = Path(__file__).resolve().parent.parent / "console"


@cache
def _parts() -> tuple[str, str, str]:
    return tuple((ASSETS / name).read_text(encoding="utf-8") for name in ("console.html", "console.css", "console.js"))  # type: ignore[return-value]


def page(nonce: str) -> str:
    """The page with its assets inlined under ``nonce``."""
    html, css, js = _parts()
    return html.replace("{{css}}", css).replace("{{js}}", js).replace("{{nonce}}", nonce)


@bp.function_name("console")
@bp.route(route="console", methods=["GET"])
def console(req: func.HttpRequest) -> func.HttpResponse:
    """The console page, behind the same auth as the other routes (a function key or Entra ID)."""
    nonce = secrets.token_urlsafe(16)
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return func.HttpResponse(
        page(nonce),
        status_code=200,
        mimetype="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",  # the page's URL may carry the function key
            "Cache-Control": "no-store",
        },
    )
