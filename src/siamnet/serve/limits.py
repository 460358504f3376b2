"""A cap on the size of request bodies and a deadline for reading them, enforced while reading.

`UploadLimit` is plain ASGI middleware. It reads each request body itself, counting bytes, and
answers 413 as soon as the count passes the cap, whatever ``Content-Length`` said (or when no
length was given). A body within the cap is handed on to the application unchanged. A client
that announced ``Expect: 100-continue`` with a length over the cap is answered before it sends
anything; otherwise the rest of an oversized body is read and dropped (up to `drain_bytes`),
so that the client, still sending, reads the 413 rather than a reset connection. A body that
has not fully arrived `read_timeout` seconds after the request's headers (a client that stalls
or trickles it) is answered 408 and its connection closed, so no client holds the service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from siamnet.errors import ArgumentError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: Seconds a request's headers, and then its body, may take to arrive unless told otherwise.
DEFAULT_READ_TIMEOUT = 60.0

#: Requests the server handles at once unless told otherwise (`siamnet.serve.admission`); more
#: wait for a turn, for `DEFAULT_QUEUE_TIMEOUT` seconds at most, then are answered 503.
DEFAULT_MAX_CONNECTIONS = 64

#: Seconds a request beyond the limit waits for a turn unless told otherwise.
DEFAULT_QUEUE_TIMEOUT = 10.0

#: Requests that may wait for a turn, per request handled at once; more are answered 503 at once.
QUEUE_PER_SLOT = 4

#: Open connections (busy, waiting or idle) per request handled at once; a request on a
#: connection beyond them is answered 503 at once.
CONNECTIONS_PER_SLOT = 8

#: Milliseconds a model call waits for more requests' images, and the most images it takes,
#: unless told otherwise (`siamnet.serve.batching`).
DEFAULT_BATCH_WINDOW_MS = 2.0
DEFAULT_MAX_BATCH = 64


def check_batching(batch_window_ms: float, max_batch: int) -> None:
    """``--batch-window-ms`` from 0 to 1000 and ``--max-batch`` at least 1 (`ArgumentError`)."""
    if not 0 <= batch_window_ms <= 1000:  # also refuses nan
        raise ArgumentError(f"--batch-window-ms {batch_window_ms}: expected 0 to 1000")
    if max_batch < 1:
        raise ArgumentError(f"--max-batch {max_batch}: expected at least 1 image")


class BodyTimeout(Exception):
    """A request body did not arrive by its deadline."""


class UploadLimit:
    """Refuse request bodies larger than `max_bytes` with 413, and bodies that take longer than
    `read_timeout` seconds to arrive with 408 (None: no deadline), each with a JSON message."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        drain_bytes: int | None = None,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes {max_bytes}: expected a positive number of bytes")
        if read_timeout is not None and not read_timeout > 0:
            raise ValueError(f"read_timeout {read_timeout}: expected seconds above 0, or None")
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else max(64 << 20, 8 * max_bytes)
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, with_deadline(receive, self.read_timeout), send)
        except BodyTimeout:
            await self._timed_out(send)
            return
        if body is not None:
            await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when it was refused (413, answered here) or the client left."""
        headers = dict(scope.get("headers") or [])
        declared = _content_length(headers.get(b"content-length"))
        if declared is not None and declared > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive, 0)
            await self._too_large(send)
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                read = len(body)
                body.clear()
                if message.get("more_body", False):
                    await self._drain(receive, read)
                await self._too_large(send)
                return None
            if not message.get("more_body", False):
                return bytes(body)

    async def _drain(self, receive: Receive, read: int) -> None:
        await drain_body(receive, read, self.drain_bytes)

    async def _too_large(self, send: Send) -> None:
        detail = (
            f"upload too large: a request may carry at most {self.max_bytes} bytes "
            f"({self.max_bytes / 1e6:g} MB, the service's --max-upload-mb); send a smaller image"
        )
        await send_json(send, 413, detail)

    async def _timed_out(self, send: Send) -> None:
        detail = (
            f"request body not received within {self.read_timeout:g} seconds of its headers "
            "(the service's --read-timeout); send the whole request without pausing"
        )
        await send_json(send, 408, detail)


async def drain_body(receive: Receive, read: int, most: int) -> None:
    """Read and drop the rest of a request body, until `read` passes `most` bytes, the client
    leaves or `receive` raises `BodyTimeout` (a deadline), so that the client, still sending,
    reads the answer rather than a reset connection."""
    try:
        while read <= most:
            message = await receive()
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
    except BodyTimeout:
        return


async def send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``{"detail": detail}`` with `status` (and `headers`) and close the connection."""
    payload = json_error(detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def json_error(detail: str) -> bytes:
    """The body of every error the service sends: ``{"detail": "<one line>"}``."""
    return json.dumps({"detail": " ".join(detail.split())}).encode()


class ErrorsAsJson:
    """The outermost layer: an exception that escapes the application before it answered is
    answered 500 in JSON (uvicorn's own answer would be plain text) and logged by uvicorn."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            if started:
                raise
            detail = "internal error; see the service's log"
            await send_json(send, 500, detail)
            raise


def with_deadline(receive: Receive, seconds: float | None) -> Receive:
    """A `receive` that raises `BodyTimeout` once `seconds` have passed since it was made."""
    if seconds is None:
        return receive
    deadline = time.monotonic() + seconds

    async def receive_by_deadline() -> Message:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BodyTimeout
        try:
            return await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError as exc:
            raise BodyTimeout from exc

    return receive_by_deadline


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
