"""The adapters' translation of azure.core exceptions covers what the SDKs raise."""

from __future__ import annotations

import inspect

import azure.core.exceptions as core
import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from function_app.adapters.azure_errors import translate
from handlers.errors import PermanentError, TransientError


class _Response:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self.reason = "reason"

    def text(self) -> str:
        return ""


def http_error(status: int, **headers: str) -> HttpResponseError:
    return HttpResponseError(message=f"status {status}", response=_Response(status, headers))  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_timeouts_and_5xx_are_transient(status: int) -> None:
    assert isinstance(translate(http_error(status), "x"), TransientError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412])
def test_client_errors_are_permanent(status: int) -> None:
    err = translate(http_error(status), "submitting job j")
    assert isinstance(err, PermanentError) and f"answered {status}" in str(err) and "submitting job j" in str(err)


def test_retry_after_is_carried() -> None:
    err = translate(http_error(429, **{"Retry-After": "7"}), "x")
    assert isinstance(err, TransientError) and err.retry_after == 7.0


@pytest.mark.parametrize("exc", [ServiceRequestError("no route"), ServiceResponseError("reset")])
def test_connection_failures_are_transient(exc: Exception) -> None:
    assert isinstance(translate(exc, "x"), TransientError)  # type: ignore[arg-type]


def test_every_azure_core_error_type_maps_to_one_of_ours() -> None:
    kinds = [c for _, c in inspect.getmembers(core, inspect.isclass) if issubclass(c, core.AzureError)]
    assert len(kinds) > 10
    for kind in kinds:
        try:
            exc = kind(message="boom")
        except (TypeError, AttributeError):  # a few need a real response object; covered by their bases
            continue
        assert isinstance(translate(exc, "x"), (TransientError, PermanentError)), kind
