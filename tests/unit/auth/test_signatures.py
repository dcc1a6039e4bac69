"""Request signatures (dfe.auth.signatures) against an independent RFC 9421 implementation.

The `rfc_*` helpers below build signature bases straight from RFC 9421 §2.3
and §2.5 with hashlib/hmac/base64 only, and are themselves pinned to the RFC's
own hmac-sha256 example (Appendix B.2.5). Requests they sign must verify, and
what `sign_request` produces must check out under them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfe.auth.signatures import (
    BadSignatureError,
    DigestMismatchError,
    ExpiredSignatureError,
    FutureSignatureError,
    InsufficientCoverageError,
    MalformedSignatureError,
    MemoryNonceStore,
    MissingSignatureError,
    ReplayedRequestError,
    SignatureError,
    UnknownKeyError,
    VerifiedRequest,
    sign_request,
    verify_request,
)

CLIENT = "dfe_test"
SECRET = "test-secret-0123456789abcdef"
OTHER_CLIENT = "dfe_other"
SECRETS = {CLIENT: SECRET, OTHER_CLIENT: "other-secret-0123456789abcdef"}
NOW = 1_700_000_000
NONCE = "n0nce-AAAAAAAAAAAAAAAAAA"
URL = "https://console.example.com/api/v1/instances?limit=10&q=shop"
BODY = b'{"name": "shop", "cluster": "eu-1"}'
TOKEN = "user-token-abc.def"
REQUIRED = ("@method", "@authority", "@target-uri", "content-digest")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def with_headers(self, **changes: str | None) -> Request:
        """A copy with headers set (or removed, for None); names use _ for -."""
        headers = dict(self.headers)
        for name, value in changes.items():
            name = name.replace("_", "-")
            for existing in [h for h in headers if h.lower() == name.lower()]:
                del headers[existing]
            if value is not None:
                headers[name] = value
        return replace(self, headers=headers)


def plain(*, token: bool = False, body: bytes = BODY, method: str = "POST") -> Request:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["DFE-User-Token"] = TOKEN
    return Request(method, URL, headers, body)


# --- an independent RFC 9421 / RFC 9530 implementation --------------------------------


def rfc_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest, sha-256, as a Structured Field dictionary."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def rfc_component(name: str, method: str, url: str, headers: dict[str, str]) -> str:
    """The value of one component (RFC 9421 §2.1 fields, §2.2 derived components)."""
    if name == "@method":
        return method
    if name == "@target-uri":
        return url
    if name == "@authority":
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.port is None or parts.port == DEFAULT_PORTS[parts.scheme]:
            return host
        return f"{host}:{parts.port}"
    values = [v.strip() for k, v in headers.items() if k.lower() == name]
    assert values, f"covered header {name} is missing"
    return ", ".join(values)


def rfc_signature_base(
    method: str, url: str, headers: dict[str, str], components: list[str], params: str
) -> bytes:
    """RFC 9421 §2.5: one `"name": value` line per component, then @signature-params.

    A component is a plain name or a serialized identifier such as `"content-digest";sf`
    (only for fields whose value is already in canonical Structured Field form).
    """
    lines = []
    for component in components:
        identifier = component if component.startswith('"') else f'"{component}"'
        name = identifier.split('"')[1]
        lines.append(f"{identifier}: {rfc_component(name, method, url, headers)}")
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines).encode("ascii")


def rfc_hmac(secret: bytes, base: bytes) -> str:
    return base64.b64encode(hmac.new(secret, base, hashlib.sha256).digest()).decode()


def rfc_sign(
    request: Request,
    *,
    keyid: str = CLIENT,
    secret: str = SECRET,
    created: int = NOW,
    nonce: str = NONCE,
    components: list[str] | None = None,
    params: str | None = None,
    label: str = "sig1",
) -> Request:
    """Sign like any other RFC 9421 client would; `params` replaces the default parameters."""
    signed = request.with_headers(content_digest=rfc_digest(request.body))
    if components is None:
        components = list(REQUIRED)
        if any(h.lower() == "dfe-user-token" for h in request.headers):
            components.append("dfe-user-token")
    if params is None:
        params = f';created={created};keyid="{keyid}";alg="hmac-sha256";nonce="{nonce}"'
    identifiers = [c if c.startswith('"') else f'"{c}"' for c in components]
    signature_params = "(" + " ".join(identifiers) + ")" + params
    base = rfc_signature_base(
        signed.method, signed.url, signed.headers, components, signature_params
    )
    return signed.with_headers(
        signature_input=f"{label}={signature_params}",
        signature=f"{label}=:{rfc_hmac(secret.encode(), base)}:",
    )


def rfc_check(request: Request, secret: str) -> dict[str, str]:
    """Verify a `sig1` signature from scratch; return its parameters (strings unquoted)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-digest"] == rfc_digest(request.body)
    match = re.fullmatch(r"sig1=(\(([^)]*)\)((?:;[a-z]+=[^;]+)*))", headers["signature-input"])
    assert match, headers["signature-input"]
    signature_params, inner, params = match.groups()
    components = re.findall(r'"([^"]+)"', inner)
    base = rfc_signature_base(
        request.method, request.url, request.headers, components, signature_params
    )
    signature = re.fullmatch(r"sig1=:([A-Za-z0-9+/=]+):", headers["signature"])
    assert signature
    assert hmac.compare_digest(signature.group(1), rfc_hmac(secret.encode(), base))
    parsed = dict(p.split("=", 1) for p in params[1:].split(";"))
    return {"components": " ".join(components)} | {k: v.strip('"') for k, v in parsed.items()}


def signed(
    request: Request,
    *,
    client_id: str = CLIENT,
    client_secret: str = SECRET,
    created: int | None = NOW,
    nonce: str | None = NONCE,
) -> Request:
    """Sign with sign_request and return the request with the new headers."""
    added = sign_request(
        request.method,
        request.url,
        request.headers,
        request.body,
        client_id=client_id,
        client_secret=client_secret,
        created=created,
        nonce=nonce,
    )
    return request.with_headers(**{k.replace("-", "_"): v for k, v in added.items()})


def verify(
    request: Request,
    *,
    now: float = NOW,
    nonces: MemoryNonceStore | None = None,
    resolve_secret: Callable[[str], str | None] = SECRETS.get,
    **kwargs: int,
) -> VerifiedRequest:
    return verify_request(
        request.method,
        request.url,
        request.headers,
        request.body,
        resolve_secret=resolve_secret,
        nonces=nonces if nonces is not None else MemoryNonceStore(clock=lambda: now),
        now=now,
        **kwargs,
    )


def test_rfc_helpers_reproduce_rfc9421_example_b25() -> None:
    # RFC 9421 Appendix B.2.5 (request of B.2, shared secret of B.1.5).
    secret = base64.b64decode(
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
    )
    headers = {"Date": "Tue, 20 Apr 2021 02:07:55 GMT", "Content-Type": "application/json"}
    params = '("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
    base = rfc_signature_base(
        "POST",
        "http://example.com/foo?param=Value&Pet=dog",
        headers,
        ["date", "@authority", "content-type"],
        params,
    )
    assert rfc_hmac(secret, base) == "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="


# --- both directions of the cross-check -----------------------------------------------


@pytest.mark.parametrize(
    ("request_", "options"),
    [
        (plain(), {}),
        (plain(token=True), {}),
        (plain(body=b"", method="GET"), {}),
        (plain(), {"label": "dfe"}),
        (plain(), {"params": f';nonce="{NONCE}";keyid="{CLIENT}";created={NOW}'}),
        (plain(), {"components": ["content-digest", "@target-uri", "@method", "@authority"]}),
        (plain(), {"components": [*REQUIRED, "content-type"]}),
        (plain(), {"params": f';created={NOW};keyid="{CLIENT}";nonce="{NONCE}";tag="dfe"'}),
        (
            plain(),
            {"params": f';created={NOW};expires={NOW + 60};keyid="{CLIENT}";nonce="{NONCE}"'},
        ),
    ],
    ids=[
        "default",
        "user-token",
        "empty-body",
        "other-label",
        "other-param-order",
        "other-component-order",
        "extra-component",
        "tag",
        "expires",
    ],
)
def test_requests_signed_from_the_rfc_verify(request_: Request, options: dict[str, object]) -> None:
    result = verify(rfc_sign(request_, **options))  # type: ignore[arg-type]
    assert result == VerifiedRequest(
        client_id=CLIENT,
        created=NOW,
        nonce=NONCE,
        covers_user_token="DFE-User-Token" in request_.headers,
    )


@pytest.mark.parametrize("request_", [plain(), plain(token=True), plain(body=b"", method="GET")])
def test_sign_request_output_checks_out_from_scratch(request_: Request) -> None:
    params = rfc_check(signed(request_), SECRET)
    components = " ".join(REQUIRED) + (
        " dfe-user-token" if "DFE-User-Token" in request_.headers else ""
    )
    assert params == {
        "components": components,
        "created": str(NOW),
        "keyid": CLIENT,
        "alg": "hmac-sha256",
        "nonce": NONCE,
    }


def test_sign_request_returns_only_the_headers_to_add() -> None:
    added = sign_request("POST", URL, {}, BODY, client_id=CLIENT, client_secret=SECRET)
    assert sorted(added) == ["Content-Digest", "Signature", "Signature-Input"]
    assert added["Signature-Input"].startswith(
        'sig1=("@method" "@authority" "@target-uri" "content-digest");'
    )


def test_sign_request_defaults_to_now_and_a_fresh_random_nonce() -> None:
    first, second = (rfc_check(signed(plain(), created=None, nonce=None), SECRET) for _ in range(2))
    assert first["nonce"] != second["nonce"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", first["nonce"])
    # Verified against the real clock: created must be within the window of now.
    verify_request(
        "POST",
        URL,
        signed(plain(), created=None, nonce=None).headers,
        BODY,
        resolve_secret=SECRETS.get,
        nonces=MemoryNonceStore(),
    )


@pytest.mark.parametrize("nonce", ["short", "x" * 21, "has space" * 3, "ünïcödé" * 4, "x" * 129])
def test_sign_request_refuses_a_weak_or_odd_nonce(nonce: str) -> None:
    with pytest.raises(ValueError, match="nonce"):
        signed(plain(), nonce=nonce)


def test_empty_body_still_gets_a_content_digest() -> None:
    request = signed(plain(body=b"", method="GET"))
    assert (
        request.headers["Content-Digest"]
        == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    )
    assert verify(request).client_id == CLIENT


def test_sign_request_ignores_stale_signature_headers_it_is_given() -> None:
    stale = plain().with_headers(
        content_digest="sha-256=:AAAA:", signature="sig1=:AAAA:", signature_input="sig1=()"
    )
    added = sign_request(
        "POST",
        URL,
        stale.headers,
        BODY,
        client_id=CLIENT,
        client_secret=SECRET,
        created=NOW,
        nonce=NONCE,
    )
    assert added["Content-Digest"] == rfc_digest(BODY)
    fresh = stale.with_headers(**{k.replace("-", "_"): v for k, v in added.items()})
    assert verify(fresh).client_id == CLIENT


def test_header_names_are_case_insensitive() -> None:
    request = signed(plain(token=True).with_headers(dfe_user_token=None, DFE_USER_TOKEN=TOKEN))
    for case in (str.lower, str.upper):
        shouted = replace(request, headers={case(k): v for k, v in request.headers.items()})
        assert verify(shouted).covers_user_token


# --- replay -----------------------------------------------------------------------------


def test_the_same_nonce_twice_is_a_replay() -> None:
    nonces = MemoryNonceStore(clock=lambda: NOW)
    request = signed(plain())
    verify(request, nonces=nonces)
    with pytest.raises(ReplayedRequestError) as caught:
        verify(request, nonces=nonces)
    assert caught.value.code == "replayed"


def test_a_nonce_is_remembered_per_client() -> None:
    nonces = MemoryNonceStore(clock=lambda: NOW)
    verify(signed(plain()), nonces=nonces)
    other = signed(plain(), client_id=OTHER_CLIENT, client_secret=SECRETS[OTHER_CLIENT])
    assert verify(other, nonces=nonces).client_id == OTHER_CLIENT


@pytest.mark.parametrize(
    "forge",
    [
        lambda r: replace(r, method="DELETE"),
        lambda r: replace(r, body=b"{}"),
        lambda r: r.with_headers(signature="sig1=:" + "A" * 43 + "=:"),
    ],
    ids=["bad-signature", "bad-digest", "bad-hmac"],
)
def test_a_rejected_request_does_not_spend_its_nonce(forge: Callable[[Request], Request]) -> None:
    nonces = MemoryNonceStore(clock=lambda: NOW)
    genuine = signed(plain())
    with pytest.raises(SignatureError):
        verify(forge(genuine), nonces=nonces)
    assert verify(genuine, nonces=nonces).nonce == NONCE


def test_nonce_is_kept_as_long_as_the_request_could_still_be_accepted() -> None:
    clock = [float(NOW)]
    nonces = MemoryNonceStore(clock=lambda: clock[0])
    request = signed(plain())
    verify(request, nonces=nonces, now=NOW)
    clock[0] = NOW + 300
    with pytest.raises(ReplayedRequestError):
        verify(request, nonces=nonces, now=NOW + 300)
    clock[0] = NOW + 301
    with pytest.raises(ExpiredSignatureError):
        verify(request, nonces=nonces, now=NOW + 301)


# --- tampering with covered components ------------------------------------------------


def flip_signature_bit(request: Request) -> str:
    raw = bytearray(base64.b64decode(request.headers["Signature"].split(":")[1]))
    raw[0] ^= 1
    return "sig1=:" + base64.b64encode(raw).decode() + ":"


TAMPERINGS: dict[str, tuple[Callable[[Request], Request], type[SignatureError]]] = {
    "method": (lambda r: replace(r, method="PUT"), BadSignatureError),
    "authority-host": (
        lambda r: replace(r, url=r.url.replace("console.example.com", "evil.example.com")),
        BadSignatureError,
    ),
    "authority-port": (
        lambda r: replace(r, url=r.url.replace("example.com/", "example.com:8443/")),
        BadSignatureError,
    ),
    "scheme": (lambda r: replace(r, url=r.url.replace("https:", "http:")), BadSignatureError),
    "path": (
        lambda r: replace(r, url=r.url.replace("/instances", "/instances/shop")),
        BadSignatureError,
    ),
    "query-value": (
        lambda r: replace(r, url=r.url.replace("limit=10", "limit=11")),
        BadSignatureError,
    ),
    "query-dropped": (lambda r: replace(r, url=r.url.split("?")[0]), BadSignatureError),
    "body": (lambda r: replace(r, body=r.body + b" "), DigestMismatchError),
    "body-and-digest": (
        lambda r: replace(r, body=b"{}").with_headers(content_digest=rfc_digest(b"{}")),
        BadSignatureError,
    ),
    "user-token": (lambda r: r.with_headers(dfe_user_token="someone-else"), BadSignatureError),
    "user-token-removed": (lambda r: r.with_headers(dfe_user_token=None), BadSignatureError),
    "signature": (lambda r: r.with_headers(signature=flip_signature_bit(r)), BadSignatureError),
    "created": (
        lambda r: r.with_headers(
            signature_input=r.headers["Signature-Input"].replace(str(NOW), str(NOW + 1))
        ),
        BadSignatureError,
    ),
    "nonce": (
        lambda r: r.with_headers(
            signature_input=r.headers["Signature-Input"].replace("n0nce", "n1nce")
        ),
        BadSignatureError,
    ),
    "keyid": (
        lambda r: r.with_headers(
            signature_input=r.headers["Signature-Input"].replace(CLIENT, OTHER_CLIENT)
        ),
        BadSignatureError,
    ),
}


@pytest.mark.parametrize("name", TAMPERINGS)
def test_tampering_with_a_covered_component_is_rejected(name: str) -> None:
    tamper, error = TAMPERINGS[name]
    with pytest.raises(error):
        verify(tamper(signed(plain(token=True))), now=NOW + 1)


def test_the_wrong_secret_is_a_bad_signature() -> None:
    with pytest.raises(BadSignatureError) as caught:
        verify(signed(plain(), client_secret="not-the-secret"))
    assert caught.value.code == "bad_signature"
    assert "not-the-secret" not in caught.value.detail


# --- coverage -----------------------------------------------------------------------------


@pytest.mark.parametrize("omitted", REQUIRED)
def test_a_signature_must_cover_every_required_component(omitted: str) -> None:
    components = [c for c in REQUIRED if c != omitted]
    with pytest.raises(InsufficientCoverageError) as caught:
        verify(rfc_sign(plain(), components=components))
    assert caught.value.code == "insufficient_coverage"
    assert omitted in caught.value.detail


def test_a_user_token_must_be_covered_when_present() -> None:
    with pytest.raises(InsufficientCoverageError, match="dfe-user-token"):
        verify(rfc_sign(plain(token=True), components=list(REQUIRED)))


def test_a_user_token_added_after_signing_is_rejected() -> None:
    with pytest.raises(InsufficientCoverageError):
        verify(signed(plain()).with_headers(dfe_user_token=TOKEN))


def test_a_component_counts_only_without_parameters() -> None:
    request = rfc_sign(plain(), components=[*REQUIRED[:3], '"content-digest";sf'])
    with pytest.raises(InsufficientCoverageError, match="content-digest"):
        verify(request)


# --- time window ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (NOW + 300, None),
        (NOW + 301, ExpiredSignatureError),
        (NOW + 86_400, ExpiredSignatureError),
        (NOW - 30, None),
        (NOW - 31, FutureSignatureError),
        (NOW - 86_400, FutureSignatureError),
    ],
)
def test_clock_skew_window(now: int, error: type[SignatureError] | None) -> None:
    request = signed(plain())
    if error is None:
        assert verify(request, now=now).created == NOW
    else:
        with pytest.raises(error):
            verify(request, now=now)


def test_only_the_given_clock_counts() -> None:
    # Far ahead of the wall clock: the library's own wall-clock checks must not interfere.
    year_2096 = 4_000_000_000
    assert verify(signed(plain(), created=year_2096), now=year_2096).created == year_2096


def test_the_window_is_configurable() -> None:
    request = signed(plain())
    assert verify(request, now=NOW + 600, max_age=600).created == NOW
    with pytest.raises(ExpiredSignatureError):
        verify(request, now=NOW + 61, max_age=60)
    with pytest.raises(FutureSignatureError):
        verify(request, now=NOW - 1, max_future=0)


def test_a_passed_expires_parameter_is_honoured() -> None:
    params = f';created={NOW};expires={NOW + 10};keyid="{CLIENT}";nonce="{NONCE}"'
    with pytest.raises(ExpiredSignatureError) as caught:
        verify(rfc_sign(plain(), params=params), now=NOW + 11)
    assert caught.value.code == "expired"


# --- keys, missing and malformed headers ----------------------------------------------------


def test_an_unknown_key_is_rejected() -> None:
    with pytest.raises(UnknownKeyError) as caught:
        verify(signed(plain(), client_id="dfe_nobody"))
    assert caught.value.code == "unknown_key"


@pytest.mark.parametrize(
    "drop",
    [{"signature": None}, {"signature_input": None}, {"signature": None, "signature_input": None}],
)
def test_a_request_without_signature_headers_is_unsigned(drop: dict[str, None]) -> None:
    with pytest.raises(MissingSignatureError) as caught:
        verify(signed(plain()).with_headers(**drop))
    assert caught.value.code == "missing_signature"


def test_a_request_without_content_digest_is_rejected() -> None:
    with pytest.raises(DigestMismatchError) as caught:
        verify(signed(plain()).with_headers(content_digest=None))
    assert caught.value.code == "digest_mismatch"


MALFORMED_HEADERS = {
    "not-a-dictionary": {"signature_input": 'sig1=("@method"'},
    "signature-not-bytes": {"signature": 'sig1="abc"'},
    "input-not-a-list": {"signature_input": f'sig1="@method";created={NOW}'},
    "labels-differ": {"signature": "sig2=:AAAA:"},
    "two-signatures": {
        "signature_input": f'sig1=("@method");created={NOW}, sig2=("@method");created={NOW}',
        "signature": "sig1=:AAAA:, sig2=:AAAA:",
    },
    "duplicate-label": {"signature": "sig1=:AAAA:, sig1=:AAAA:"},
    "empty-input": {"signature_input": ""},
    "token-component": {
        "signature_input": f'sig1=(content-digest "@method");created={NOW};keyid="{CLIENT}"'
        f';nonce="{NONCE}"'
    },
}


@pytest.mark.parametrize("name", MALFORMED_HEADERS)
def test_malformed_signature_headers(name: str) -> None:
    with pytest.raises(MalformedSignatureError) as caught:
        verify(signed(plain()).with_headers(**MALFORMED_HEADERS[name]))
    assert caught.value.code == "malformed_signature"


MALFORMED_PARAMS = {
    "no-created": f';keyid="{CLIENT}";nonce="{NONCE}"',
    "no-nonce": f';created={NOW};keyid="{CLIENT}"',
    "no-keyid": f';created={NOW};nonce="{NONCE}"',
    "created-string": f';created="{NOW}";keyid="{CLIENT}";nonce="{NONCE}"',
    "created-boolean": f';created;keyid="{CLIENT}";nonce="{NONCE}"',
    "keyid-token": f';created={NOW};keyid=abc;nonce="{NONCE}"',
    "nonce-short": f';created={NOW};keyid="{CLIENT}";nonce="abc"',
    "nonce-odd-chars": f';created={NOW};keyid="{CLIENT}";nonce="{NONCE}+/="',
    "other-alg": f';created={NOW};keyid="{CLIENT}";alg="rsa-v1_5-sha256";nonce="{NONCE}"',
    "unknown-param": f';created={NOW};keyid="{CLIENT}";nonce="{NONCE}";foo=1',
    "expires-string": f';created={NOW};expires="x";keyid="{CLIENT}";nonce="{NONCE}"',
}


@pytest.mark.parametrize("name", MALFORMED_PARAMS)
def test_genuine_signatures_with_bad_parameters_are_malformed(name: str) -> None:
    with pytest.raises(MalformedSignatureError) as caught:
        verify(rfc_sign(plain(), params=MALFORMED_PARAMS[name]))
    assert caught.value.code == "malformed_signature"


def test_every_error_has_a_distinct_stable_code_and_a_detail() -> None:
    errors = SignatureError.__subclasses__()
    assert {e.code for e in errors} == {
        "missing_signature",
        "malformed_signature",
        "unknown_key",
        "insufficient_coverage",
        "bad_signature",
        "digest_mismatch",
        "expired",
        "from_the_future",
        "replayed",
    }
    assert len(errors) == 9
    error = ReplayedRequestError("seen it")
    assert (error.detail, str(error)) == ("seen it", "seen it")


# --- the in-memory nonce store -----------------------------------------------------------


def test_memory_nonce_store_remembers_until_expiry_then_purges() -> None:
    clock = [100.0]
    store = MemoryNonceStore(clock=lambda: clock[0])
    assert store.remember("a", "n", expires_at=110)
    assert not store.remember("a", "n", expires_at=110)
    assert store.remember("b", "n", expires_at=120)
    clock[0] = 110
    assert not store.remember("a", "n", expires_at=999)
    clock[0] = 110.5
    assert store.remember("c", "n", expires_at=200)
    assert len(store) == 2  # ("a", "n") is gone
    assert store.remember("a", "n", expires_at=210)
    clock[0] = 500
    assert store.remember("d", "n", expires_at=600)
    assert len(store) == 1


def test_memory_nonce_store_admits_a_nonce_once_under_concurrency() -> None:
    store = MemoryNonceStore()
    start = threading.Barrier(16)
    results: list[bool] = []

    def attempt() -> None:
        start.wait()
        results.append(store.remember(CLIENT, NONCE, expires_at=float("inf")))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]


# --- properties -------------------------------------------------------------------------------

SEGMENTS = st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=12)
PATHS = st.lists(SEGMENTS, max_size=5).map(lambda segments: "/" + "/".join(segments))
QUERIES = st.one_of(
    st.just(""),
    st.just("?"),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), min_size=1, max_size=4).map(
        lambda pairs: "?" + urlencode(pairs, quote_via=quote)
    ),
)
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


@settings(deadline=None)
@given(
    method=METHODS, path=PATHS, query=QUERIES, body=st.binary(max_size=4096), token=st.booleans()
)
def test_property_sign_then_verify(
    method: str, path: str, query: str, body: bytes, token: bool
) -> None:
    request = replace(
        plain(token=token, body=body, method=method),
        url=f"https://console.example.com{path}{query}",
    )
    result = verify(signed(request, nonce=None))
    assert (result.client_id, result.covers_user_token) == (CLIENT, token)


@settings(deadline=None)
@given(
    method=METHODS,
    path=PATHS,
    query=QUERIES,
    body=st.binary(min_size=1, max_size=4096),
    data=st.data(),
)
def test_property_flipping_a_body_byte_fails(
    method: str, path: str, query: str, body: bytes, data: st.DataObject
) -> None:
    request = replace(
        plain(body=body, method=method), url=f"https://console.example.com{path}{query}"
    )
    genuine = signed(request)
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    flipped = bytearray(body)
    flipped[index] ^= mask
    with pytest.raises(DigestMismatchError):
        verify(replace(genuine, body=bytes(flipped)))


# --- the documentation's worked example -----------------------------------------------------


def test_the_worked_example_in_the_docs_is_what_the_code_produces() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "authentication.md").read_text(encoding="utf-8")
    url = "https://console.example.com/api/v1/instances?cluster=eu-1"
    body = b'{"name":"shop","plan":"small"}'
    for headers in ({"Content-Type": "application/json"}, {"DFE-User-Token": "ut_example.token"}):
        added = sign_request(
            "POST",
            url,
            headers,
            body,
            client_id="dfe_example",
            client_secret="example-secret-do-not-use",
            created=1767225600,
            nonce="7Yw3hJqz0QmXc2LkVt9sRa",
        )
        for name, value in added.items():
            assert f"{name}: {value}" in doc
        signature_input = added["Signature-Input"].removeprefix("sig1=")
        components = re.findall(r'"([^"]+)"', signature_input.split(")")[0])
        base = rfc_signature_base("POST", url, headers | added, components, signature_input)
        assert base.decode() in doc
