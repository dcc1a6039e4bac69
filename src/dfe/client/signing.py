"""Signing outgoing requests with an app key: an httpx2 auth that adds RFC 9421 headers."""

from __future__ import annotations

from collections.abc import Generator

import httpx2

from dfe.auth.signatures import USER_TOKEN_HEADER, sign_request


class AppKeyAuth(httpx2.Auth):
    """Signs every request with (client_id, client_secret); sends a user token when given."""

    requires_request_body = True

    def __init__(self, client_id: str, client_secret: str, user_token: str | None = None) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.user_token = user_token

    def __repr__(self) -> str:
        return f"AppKeyAuth(client_id={self.client_id!r})"

    def for_user(self, user_token: str | None) -> AppKeyAuth:
        """The same key, sending `user_token` (or none) with each request."""
        return AppKeyAuth(self.client_id, self._client_secret, user_token)

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        if self.user_token is not None:
            request.headers[USER_TOKEN_HEADER] = self.user_token
        signed = sign_request(
            request.method,
            str(request.url),
            request.headers,
            request.content,
            client_id=self.client_id,
            client_secret=self._client_secret,
        )
        request.headers.update(signed)
        yield request
