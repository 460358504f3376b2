"""The HTTP server (uvicorn) for the web application, with limits on connections and reads,
and every answer of its own in JSON.

How many requests are handled at once, and how long the others wait, is the application's
(`siamnet.serve.admission`); uvicorn's own limit is not used: it counted every open connection,
the asking one and idle ones included, so that a burst of exactly `max_connections` clients got
no answer at all, and it answered in plain text before reading the request's body (a client
still sending saw its connection reset). Here, open connections are bounded far above the
request limit (`CONNECTIONS_PER_SLOT` each): a request on a connection beyond them has its body
read and is answered 503 in JSON.

A connection whose request headers have not fully arrived `read_timeout` seconds after it
opened (or after its previous answer) is answered 408 and closed, as is a request whose body is
late (`siamnet.serve.limits.UploadLimit`), so clients that stall cannot hold connections for
ever. Idle keep-alive connections close after `KEEP_ALIVE_SECONDS`. A malformed request (a
junk request line, two Host headers, a bad Content-Length or chunked body) is answered 400 in
JSON naming what is wrong, and anything that escapes the application 500 in JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from siamnet.serve.admission import refuse
from siamnet.serve.limits import (
    CONNECTIONS_PER_SLOT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT,
    ErrorsAsJson,
    Receive,
    Scope,
    Send,
    json_error,
)

#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_SECONDS = 5


def server_config(
    app: Any,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    access_log: bool = False,
) -> uvicorn.Config:
    """uvicorn's configuration for `app`: HTTP/1.1 with the connection bound, header deadline
    and JSON errors above (the request limit and body deadline are the application's own, see
    `siamnet.serve.app.build_app`)."""
    if max_connections < 1:
        raise ValueError(f"max_connections {max_connections}: expected at least 1")
    if not read_timeout > 0:
        raise ValueError(f"read_timeout {read_timeout}: expected seconds above 0")

    class Protocol(HeaderDeadlineProtocol):
        header_timeout = read_timeout
        max_open = max_connections * CONNECTIONS_PER_SLOT

    return uvicorn.Config(
        ErrorsAsJson(app),
        http=Protocol,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        limit_concurrency=None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=5,
    )


class RecordingConnection(h11.Connection):
    """h11's connection, keeping what was wrong with the last malformed request it read."""

    last_error = ""

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            reason = " ".join(str(exc).split())
            if "bytearray(" in reason:  # h11 quotes the bytes it read: say only what is wrong
                reason = reason.split(":")[0]
            self.last_error = reason[:200]
            raise


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's headers (when a
    connection has not sent a whole request head `header_timeout` seconds after it opened or
    after its last answer, it is answered 408 and closed), at most `max_open` open connections
    (requests on more are answered 503) and its 400 for malformed requests in JSON."""

    header_timeout: float = DEFAULT_READ_TIMEOUT
    max_open: int = DEFAULT_MAX_CONNECTIONS * CONNECTIONS_PER_SLOT
    _header_deadline: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = RecordingConnection(h11.SERVER, self.conn._max_incomplete_event_size)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_open:
            self.app = self._too_many_connections
        self._arm_header_deadline()

    async def _too_many_connections(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"the service is busy: more than {self.max_open} connections are open; "
            "try again shortly"
        )
        await refuse(send, receive, detail, 64 << 20, self.header_timeout)

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 could not parse with 400 in JSON, naming what was wrong."""
        reason = getattr(self.conn, "last_error", "") or msg
        detail = (
            f"malformed HTTP request ({reason}); send one well-formed HTTP/1.1 request "
            "(one Host header, a valid Content-Length or chunked body)"
        )
        payload = json_error(detail)
        head = (
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        )
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if not self.transport.is_closing() and not answering:
            self.transport.write(head.encode("ascii") + payload)
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # closed already, or a request is being read or answered
        detail = (
            f"request headers not received within {self.header_timeout:g} seconds "
            "(the service's --read-timeout); send the whole request without pausing"
        )
        payload = json_error(detail)
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + payload)
        self.transport.close()
