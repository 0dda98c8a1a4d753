"""The checks made before a request reaches an endpoint: its API key and its body size.

Both run before the body is parsed, so an unauthorised or oversized request costs no JSON
parsing and no tokenization. The body is read here, within the cap, and handed on whole.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError

#: Paths that need the API key; /health and /metrics stay open for probes and scrapers (the
#: server binds to 127.0.0.1 unless told otherwise).
PROTECTED_PREFIX = "/v1"


class _BodyTooLarge(Exception):
    pass


class Guard:
    """Refuses a request without the API key (401) or with a body over the cap (413)."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not self._authorized(scope, headers):
            error = APIError(
                401,
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error.response()(scope, receive, send)
            return
        try:
            body = await self._read_body(headers, receive)
        except _BodyTooLarge:
            error = APIError(
                413,
                f"the request body is larger than this server accepts ({self.max_body_bytes} "
                "bytes; ServerConfig.max_body_bytes)",
                code="request_too_large",
            )
            await error.response()(scope, receive, send)
            return
        if body is None:  # the client left while sending its body
            return
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, scope: Scope, headers: Headers) -> bool:
        if self.api_key is None or not scope["path"].startswith(PROTECTED_PREFIX):
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # Constant-time comparison: the time taken says nothing about the key.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key
        )

    async def _read_body(self, headers: Headers, receive: Receive) -> bytes | None:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _BodyTooLarge
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                raise _BodyTooLarge
            if not message.get("more_body", False):
                return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body once, then waits on the client (for a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
