"""The optional API key, and short-lived upload tokens derived from it.

With a key configured, every call needs `Authorization: Key <key>` (compared in
constant time), except the OpenAPI document, `/health`, fetching a stored file by
its unguessable URL, and the one-time upload URL handed out by
`/storage/upload/initiate`. OpenAI's routes (under `/v1/`) take `Bearer <key>`,
as OpenAI's clients send it. CDN uploads also accept `Bearer <token>` from
`/storage/auth/token`, as fal's client sends. Tokens are HMACs of their expiry
under the key, so they survive restarts and never reveal the key.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AuthMiddleware", "Authenticator", "TOKEN_LIFETIME_S"]

TOKEN_LIFETIME_S = 3600

OPENAI_PREFIX = "/v1/"
"""OpenAI's chat API: its clients send `Authorization: Bearer <key>` and read `{"error": ...}`."""
_PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/health"})


@dataclass(frozen=True)
class Authenticator:
    """Checks `Authorization` headers against the configured key (no key: all pass)."""

    api_key: SecretStr | None = None

    @property
    def enabled(self) -> bool:
        return self.api_key is not None

    def key_ok(self, authorization: str | None, *, schemes: tuple[str, ...] = ("key",)) -> bool:
        if self.api_key is None:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        expected = self.api_key.get_secret_value().encode()
        return scheme.lower() in schemes and hmac.compare_digest(value.strip().encode(), expected)

    def issue_token(self, now: float | None = None) -> tuple[str, int]:
        """A bearer token for uploads and its expiry (Unix seconds)."""
        expires = int((now or time.time()) + TOKEN_LIFETIME_S)
        return f"{expires}.{self._sign(expires)}", expires

    def token_ok(self, authorization: str | None, now: float | None = None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        expires_text, _, signature = value.strip().partition(".")
        if scheme.lower() != "bearer" or not expires_text.isdigit():
            return False
        expires = int(expires_text)
        return hmac.compare_digest(signature, self._sign(expires)) and expires > (now or time.time())

    def _sign(self, expires: int) -> str:
        key = self.api_key.get_secret_value().encode() if self.api_key is not None else b""
        return hmac.new(key, f"upload-token:{expires}".encode(), hashlib.sha256).hexdigest()


class AuthMiddleware:
    """Answers 401 in fal's `{"detail": ...}` shape when a required key is missing or wrong."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, cdn_prefix: str) -> None:
        self.app = app
        self.authenticator = authenticator
        self.cdn_prefix = cdn_prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.authenticator.enabled or self._public(scope):
            await self.app(scope, receive, send)
            return
        authorization = _header(scope, b"authorization")
        if scope["path"].startswith(OPENAI_PREFIX):
            await self._openai(scope, receive, send, authorization)
            return
        allowed = self.authenticator.key_ok(authorization)
        if not allowed and scope["path"] == f"{self.cdn_prefix}/files/upload":
            allowed = self.authenticator.token_ok(authorization)
        if allowed:
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse(
            {"detail": "Missing or wrong API key: send 'Authorization: Key <key>' with the server's key."},
            status_code=401,
            headers={"WWW-Authenticate": "Key"},
        )
        await refusal(scope, receive, send)

    async def _openai(self, scope: Scope, receive: Receive, send: Send, authorization: str | None) -> None:
        """OpenAI's routes: `Bearer <key>` (or `Key <key>`), refused in OpenAI's error shape."""
        if self.authenticator.key_ok(authorization, schemes=("bearer", "key")):
            await self.app(scope, receive, send)
            return
        message = "Missing or wrong API key: send 'Authorization: Bearer <key>' with the server's key."
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        refusal = JSONResponse({"error": error}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)

    def _public(self, scope: Scope) -> bool:
        path: str = scope["path"]
        method: str = scope["method"]
        if method in ("GET", "HEAD") and (
            path in _PUBLIC_PATHS or path.startswith(f"{self.cdn_prefix}/files/")
        ):
            return True
        return method == "PUT" and path.startswith(f"{self.cdn_prefix}/uploads/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
