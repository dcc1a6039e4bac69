"""dfe.client errors: problem details into typed exceptions, and secrets kept out of them."""

from __future__ import annotations

import asyncio
import json
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from dfe.client import (
    AppKeyAuth,
    AsyncConsoleClient,
    BadRequestError,
    ClientError,
    ConflictError,
    ConsoleClient,
    ConsoleError,
    ConsoleUnavailable,
    FieldError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
    UnexpectedResponse,
)
from dfe.schemas import KeyWithSecret

BASE = "http://console.test"
CLIENT_ID = "dfe_errors"
SECRET = "errors-secret-ThisMustNeverShowUp-0123456789"
TOKEN = "ut_ThisTokenMustNeverShowUp.signature"


def problem(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document as the Console writes it (dfe.console.api.problems)."""
    return {
        "type": f"urn:dfe:problem:{code}",
        "title": "Error",
        "status": status,
        "detail": detail,
        "code": code,
        "instance": "/api/v1/mounts/m1",
        "request_id": "req-0123456789",
        **extra,
    }


def answer(status: int, document: Any = None, **kwargs: Any) -> httpx2.MockTransport:
    """Always the same answer: a problem document, or what `kwargs` make."""

    def handler(_request: httpx2.Request) -> httpx2.Response:
        if document is None:
            return httpx2.Response(status, **kwargs)
        headers = {"Content-Type": "application/problem+json", **kwargs.get("headers", {})}
        return httpx2.Response(status, content=json.dumps(document).encode(), headers=headers)

    return httpx2.MockTransport(handler)


def client(transport: httpx2.MockTransport, **options: Any) -> ConsoleClient:
    options.setdefault("sleep", lambda _s: None)
    return ConsoleClient(BASE, CLIENT_ID, SECRET, user_token=TOKEN, transport=transport, **options)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", BadRequestError),
        (401, "bad_signature", UnauthorizedError),
        (403, "forbidden", ForbiddenError),
        (404, "not_found", NotFoundError),
        (405, "method_not_allowed", ConsoleError),
        (409, "conflict", ConflictError),
        (413, "payload_too_large", PayloadTooLargeError),
        (422, "invalid_input", InvalidInputError),
        (429, "too_many_requests", TooManyRequestsError),
        (500, "internal_error", ServerError),
    ],
)
def test_status_maps_to_its_class_with_the_problem(
    status: int, code: str, cls: type[ConsoleError]
) -> None:
    document = problem(status, code, "what went wrong")
    with client(answer(status, document)) as console, pytest.raises(cls) as caught:
        console.get_mount("m1")
    error = caught.value
    assert type(error) is cls
    assert isinstance(error, ConsoleError)
    assert isinstance(error, ClientError)
    assert (error.status, error.code, error.detail) == (status, code, "what went wrong")
    assert error.problem == document
    assert error.request_id == "req-0123456789"
    assert (error.method, error.path) == ("GET", "/api/v1/mounts/m1")
    assert str(error) == (
        f"{status} {code}: what went wrong (GET /api/v1/mounts/m1) [request id req-0123456789]"
    )
    assert (
        repr(error) == f"{cls.__name__}(status={status}, code={code!r}, detail='what went wrong')"
    )


def test_unauthorized_carries_the_signature_code() -> None:
    document = problem(401, "unknown_key", "unknown, revoked or expired key")
    with client(answer(401, document)) as console, pytest.raises(UnauthorizedError) as caught:
        console.list_clusters()
    assert caught.value.code == "unknown_key"
    assert caught.value.problem["type"] == "urn:dfe:problem:unknown_key"


def test_invalid_input_lists_the_field_errors() -> None:
    document = problem(
        422,
        "invalid_input",
        "limit: Input should be greater than or equal to 1; name: Field required",
        errors=[
            {"location": ["query", "limit"], "message": "Input should be >= 1"},
            {"location": ["body", "server", "name"], "message": "Field required"},
        ],
    )
    with client(answer(422, document)) as console, pytest.raises(InvalidInputError) as caught:
        console.list_mounts(limit=0)
    assert caught.value.errors == [
        FieldError(("query", "limit"), "Input should be >= 1"),
        FieldError(("body", "server", "name"), "Field required"),
    ]
    assert [e.field for e in caught.value.errors] == ["limit", "server.name"]


def test_invalid_input_without_field_errors() -> None:
    document = problem(422, "invalid_input", "sort: must be one of created_at, name")
    with client(answer(422, document)) as console, pytest.raises(InvalidInputError) as caught:
        console.list_mounts(sort="bogus")
    assert caught.value.errors == []
    assert caught.value.detail == "sort: must be one of created_at, name"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("900", 900), (None, None), ("soon", None)],
)
def test_too_many_requests_reads_retry_after(header: str | None, seconds: int | None) -> None:
    headers = {"Retry-After": header} if header else {}
    document = problem(429, "too_many_requests", "too many failed logins")
    calls: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return httpx2.Response(429, json=document, headers=headers)

    with client(httpx2.MockTransport(handler)) as console:
        with pytest.raises(TooManyRequestsError) as caught:
            console.login("ann@example.com", "wrong password")
        with pytest.raises(TooManyRequestsError):
            console.get_mount("m1")
    assert caught.value.retry_after == seconds
    assert len(calls) == 2  # a 429 is not retried, even for a GET


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    document = problem(429, "too_many_requests", "slow down")
    with (
        client(answer(429, document, headers={"Retry-After": when})) as console,
        pytest.raises(TooManyRequestsError) as caught,
    ):
        console.get_mount("m1")
    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 121


def test_an_error_without_a_problem_document() -> None:
    transport = answer(502, None, text="<html>Bad Gateway</html>")
    with client(transport, retries=0) as console, pytest.raises(ServerError) as caught:
        console.get_mount("m1")
    error = caught.value
    assert (error.status, error.code, error.detail, error.problem) == (
        502,
        "server_error",
        "Bad Gateway",
        {},
    )
    assert error.request_id is None


def test_a_problem_without_code_falls_back_to_the_class_default() -> None:
    with (
        client(answer(409, {"title": "Conflict", "status": 409})) as console,
        pytest.raises(ConflictError) as caught,
    ):
        console.get_mount("m1")
    assert (caught.value.code, caught.value.detail) == ("conflict", "Conflict")


def test_the_request_id_header_is_used_when_the_body_has_none() -> None:
    transport = answer(404, None, json={"detail": "gone"}, headers={"X-Request-ID": "hdr-123456"})
    with client(transport) as console, pytest.raises(NotFoundError) as caught:
        console.get_mount("m1")
    assert caught.value.request_id == "hdr-123456"
    assert caught.value.detail == "gone"


@pytest.mark.parametrize(
    ("status", "kwargs", "message"),
    [
        (200, {"text": "not json"}, "not JSON"),
        (200, {"json": {"id": "x"}}, "not a valid MountPublic"),
        (302, {"headers": {"Location": "/elsewhere"}}, "unexpected status 302"),
    ],
)
def test_unexpected_success_answers(status: int, kwargs: dict[str, Any], message: str) -> None:
    with (
        client(answer(status, None, **kwargs)) as console,
        pytest.raises(UnexpectedResponse, match=message) as caught,
    ):
        console.get_mount("m1")
    assert caught.value.status == status
    assert "GET /api/v1/mounts/m1" in str(caught.value)


def test_a_malformed_answer_does_not_quote_the_secret_it_holds() -> None:
    body = {"client_id": "dfe_x", "client_secret": SECRET, "owner_type": "nonsense"}
    with (
        client(answer(201, None, json=body)) as console,
        pytest.raises(UnexpectedResponse) as caught,
    ):
        console.rotate_key("dfe_x")
    text = "".join(traceback.format_exception(caught.value))
    assert "owner_type" in text
    assert SECRET not in text


def every_error() -> list[BaseException]:
    """One of each exception the client raises, from a client holding a secret and a token."""
    errors: list[BaseException] = []
    for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 503):
        document = problem(status, "some_code", "detail", errors=[])
        with client(answer(status, document), retries=0) as console:
            try:
                console.get_mount("m1")
            except ConsoleError as error:
                errors.append(error)

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("Connection refused", request=request)

    with client(httpx2.MockTransport(refuse), retries=1) as console:
        try:
            console.get_mount("m1")
        except ConsoleUnavailable as error:
            errors.append(error)
    with client(answer(200, None, text="nope")) as console:
        try:
            console.get_mount("m1")
        except UnexpectedResponse as error:
            errors.append(error)
    assert len(errors) == 12
    return errors


def test_secrets_are_in_no_exception_message_repr_or_traceback() -> None:
    for error in every_error():
        shown = [
            str(error),
            repr(error),
            repr(error.args),
            repr(vars(error)),
            "".join(traceback.format_exception(error)),
        ]
        for text in shown:
            assert SECRET not in text, type(error)
            assert TOKEN not in text, type(error)
        # Nothing chained: a transport error would carry the request, token header and all.
        assert error.__cause__ is None
        assert error.__context__ is None


def test_secrets_are_not_in_the_reprs_of_clients_or_auth() -> None:
    sync = ConsoleClient(BASE, CLIENT_ID, SECRET, user_token=TOKEN)
    derived = ConsoleClient(BASE, CLIENT_ID, SECRET).with_user_token(TOKEN)
    asynchronous = AsyncConsoleClient(BASE, CLIENT_ID, SECRET, user_token=TOKEN)
    auth = AppKeyAuth(CLIENT_ID, SECRET, TOKEN)
    for thing in (sync, derived, asynchronous, auth, auth.for_user(TOKEN)):
        assert SECRET not in repr(thing)
        assert SECRET not in str(thing)
        assert TOKEN not in repr(thing)
        assert TOKEN not in str(thing)
        assert CLIENT_ID in repr(thing)
    assert repr(derived) == (
        "ConsoleClient(base_url='http://console.test/api/v1', client_id='dfe_errors',"
        " acting_for_user=True)"
    )
    sync.close()
    derived.close()
    asyncio.run(asynchronous.aclose())


def test_unavailable_says_where_and_how_often() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("Connection refused", request=request)

    with (
        client(httpx2.MockTransport(refuse), retries=2) as console,
        pytest.raises(ConsoleUnavailable) as caught,
    ):
        console.get_mount("m1")
    error = caught.value
    assert error.attempts == 3
    assert error.reason == "ConnectError: Connection refused"
    assert str(error) == (
        "cannot reach the Console (GET http://console.test/api/v1/mounts/m1, 3 attempts):"
        " ConnectError: Connection refused"
    )


# Key files


def key_file(tmp_path: Path, console_url: str = "http://127.0.0.1:8000") -> Path:
    from dfe.services.setup import write_key_file

    key = KeyWithSecret.model_validate(
        {
            "id": 1,
            "client_id": CLIENT_ID,
            "owner_type": "dashboard",
            "owner_id": None,
            "label": "dashboard (setup)",
            "created_at": "2026-01-01T00:00:00Z",
            "last_used_at": None,
            "expires_at": None,
            "replaced_by_id": None,
            "client_secret": SECRET,
        }
    )
    return write_key_file(tmp_path / "dashboard.key", key, console_url)


def test_from_key_file_reads_what_setup_writes(tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"status": "ok"})

    path = key_file(tmp_path)
    with ConsoleClient.from_key_file(path, transport=httpx2.MockTransport(handler)) as console:
        assert console.client_id == CLIENT_ID
        assert console.base_url == "http://127.0.0.1:8000/api/v1"
        console.health()
    other = AsyncConsoleClient.from_key_file(str(path), base_url="https://c.example")
    assert other.base_url == "https://c.example/api/v1"
    asyncio.run(other.aclose())
    assert str(seen[0].url) == "http://127.0.0.1:8000/api/v1/health"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a JSON key file"),
        ("[1, 2]", "not a JSON key file"),
        (json.dumps({"client_id": "dfe_x", "console_url": "http://c"}), "no client_secret"),
        (json.dumps({"client_id": "dfe_x", "client_secret": SECRET}), "no console_url"),
    ],
)
def test_from_key_file_refuses_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        ConsoleClient.from_key_file(path)
    assert SECRET not in str(caught.value)
