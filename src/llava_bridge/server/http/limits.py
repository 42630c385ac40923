"""The request body size cap, enforced before the body is read into memory."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimitMiddleware"]


class BodySizeLimitMiddleware:
    """Answers 413 when `Content-Length` or the streamed body exceeds `max_bytes`.

    A body without `Content-Length` (chunked) is read here first, counting, up to the
    cap; over it the answer is 413 at once, else the app gets the body as if streamed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: str | None = None
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length":
                length = bytes(value).decode("latin-1").strip()
        if length is not None:  # the HTTP parser holds the body to this length
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        received = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"The request body is over this server's {self.max_bytes:,}-byte limit; "
            "send a smaller image (or upload it first), or raise --max-body-mb."
        )
        await JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})(
            scope, receive, send
        )
