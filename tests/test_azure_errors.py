"""The adapters' translation of azure.core exceptions covers what the SDKs raise."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from email.utils import format_datetime

import azure.core.exceptions as core
import pytest
from azure.ai.ml.exceptions import MlException
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

from function_app.adapters.azure_errors import describe, is_transient, parse_retry_after, retry_after, translate
from handlers.errors import PermanentError, TransientError
from tests.builders import Response, http_error


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_timeouts_and_5xx_are_transient(status: int) -> None:
    assert isinstance(translate(http_error(status), "x"), TransientError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412])
def test_client_errors_are_permanent(status: int) -> None:
    err = translate(http_error(status), "submitting job j")
    assert isinstance(err, PermanentError) and f"answered {status}" in str(err) and "submitting job j" in str(err)


def test_retry_after_is_carried() -> None:
    err = translate(http_error(429, {"Retry-After": "7"}), "x")
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


def test_connection_failures_timeouts_and_token_failures_are_transient() -> None:
    assert is_transient(ServiceRequestError("connection refused"))
    assert is_transient(ServiceResponseError("connection reset"))
    assert is_transient(ServiceResponseTimeoutError("read timed out"))
    unreachable = ClientAuthenticationError("ManagedIdentityCredential: no response")
    unreachable.__cause__ = ServiceRequestError("no route to the managed identity endpoint")
    assert is_transient(unreachable)  # the token endpoint could not be reached: try again later
    refused = ClientAuthenticationError(response=Response(401))  # type: ignore[arg-type]
    assert not is_transient(refused)  # ARM refused the token
    assert not is_transient(ValueError("a bug is not retried"))


def test_an_error_wrapped_by_azure_ai_ml_is_judged_by_what_happened_on_the_wire() -> None:
    wrapped = MlException(message="validation failed", no_personal_data_message="x", error=http_error(503))
    assert is_transient(wrapped)

    def lookup() -> None:
        try:
            raise http_error(404)
        except HttpResponseError as exc:
            raise MlException(message="asset not found", no_personal_data_message="x") from exc

    with pytest.raises(MlException) as caught:
        lookup()
    assert not is_transient(caught.value)


def test_retry_after_is_read_in_seconds_as_an_http_date_or_in_milliseconds() -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(format_datetime(datetime(2026, 11, 25, 10, 0, 7, tzinfo=UTC), usegmt=True), now) == 7.0
    assert parse_retry_after("yesterday-ish", now) is None
    assert retry_after(http_error(429, {"retry-after-ms": "1500"}), now) == 1.5
    assert retry_after(http_error(429, {"Retry-After": "3"}), now) == 3.0
    assert retry_after(http_error(503), now) is None


def test_a_credential_that_gets_no_token_is_a_configuration_fault_naming_azure_client_id_and_the_role() -> None:
    wrong_id = ClientAuthenticationError(
        "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
        "ManagedIdentityCredential: Azure ML identity not found for client id 0000"
    )
    assert not is_transient(wrong_id)
    err = translate(wrong_id, "submitting pipeline job j")
    assert isinstance(err, PermanentError)
    assert "AZURE_CLIENT_ID" in str(err) and "AzureML Data Scientist" in str(err)
    assert "DefaultAzureCredential failed to retrieve a token" in str(err)


def test_messages_carry_text_never_terminal_colour_codes() -> None:
    coloured = MlException(
        message="\x1b[37m\n\x1b[31mError: the model field is required\x1b[39m\n\x1b[0m",
        no_personal_data_message="x",
    )
    assert describe(coloured) == "MlException: Error: the model field is required"
    assert "\x1b" not in str(translate(coloured, "creating deployment e/d"))


def test_the_one_translator_says_what_to_do_with_what_the_adapter_knows() -> None:
    """The Azure ML backend's context (which service, where, what to grant, a remedy): the same
    translator, with messages that say what was looked for where, and what to fix."""
    azure_ml = {"service": "Azure ML", "where": "workspace ws", "refused": "grant the identity a role"}
    missing = translate(http_error(404), "online endpoint 'e'", "create it", **azure_ml)
    assert isinstance(missing, PermanentError)
    assert str(missing) == "online endpoint 'e' not found in workspace ws; create it (Azure ML: HTTP 404: status 404)"
    refused = translate(http_error(403), "reading job j", **azure_ml)
    assert isinstance(refused, PermanentError)
    assert str(refused) == "reading job j: Azure ML refused access (HTTP 403: status 403); grant the identity a role"
    settling = translate(http_error(403), "reading job j", roles_settling=True, **azure_ml)
    assert isinstance(settling, TransientError) and "take up to an hour" in str(settling)
    assert isinstance(translate(http_error(400), "x", "fix it", **azure_ml), PermanentError)
    assert str(translate(http_error(400), "x", "fix it", **azure_ml)) == "x: HTTP 400: status 400; fix it"
    assert str(translate(http_error(400), "x", "fix it")) == "x: the service answered 400: reason; fix it"
