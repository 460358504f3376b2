"""A cap on the size of request bodies, enforced while the body is read.

`UploadLimit` is plain ASGI middleware. It reads each request body itself, counting bytes, and
answers 413 as soon as the count passes the cap, whatever ``Content-Length`` said (or when no
length was given). A body within the cap is handed on to the application unchanged. A client
that announced ``Expect: 100-continue`` with a length over the cap is answered before it sends
anything; otherwise the rest of an oversized body is read and dropped (up to `drain_bytes`),
so that the client, still sending, reads the 413 rather than a reset connection.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UploadLimit:
    """Refuse request bodies larger than `max_bytes` with 413 and a JSON message."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes {max_bytes}: expected a positive number of bytes")
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else max(64 << 20, 8 * max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = _content_length(headers.get(b"content-length"))
        if declared is not None and declared > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive, 0)
            await self._too_large(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                read = len(body)
                body.clear()
                if message.get("more_body", False):
                    await self._drain(receive, read)
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _drain(self, receive: Receive, read: int) -> None:
        """Read and drop the rest of a body, up to `drain_bytes` in all."""
        while read <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _too_large(self, send: Send) -> None:
        detail = (
            f"upload too large: a request may carry at most {self.max_bytes} bytes "
            f"({self.max_bytes / 1e6:g} MB, the service's --max-upload-mb); send a smaller image"
        )
        payload = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(value: bytes | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the whole body once, then waits on the real one (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
