"""The HTTP server (uvicorn) for the web application, with limits on connections and reads.

At most `max_connections` connections and requests are handled at once; a request beyond that
is answered 503 at once. A connection whose request headers have not fully arrived
`read_timeout` seconds after it opened (or after its previous answer) is answered 408 and
closed, as is a request whose body is late (`siamnet.serve.limits.UploadLimit`), so clients
that stall cannot hold connections for ever. Idle keep-alive connections close after
`KEEP_ALIVE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from siamnet.serve.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT

#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_SECONDS = 5


def server_config(
    app: Any,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    access_log: bool = False,
) -> uvicorn.Config:
    """uvicorn's configuration for `app`: HTTP/1.1 with the connection limit and header
    deadline above (the body deadline is the application's own, see `build_app`)."""
    if max_connections < 1:
        raise ValueError(f"max_connections {max_connections}: expected at least 1")
    if not read_timeout > 0:
        raise ValueError(f"read_timeout {read_timeout}: expected seconds above 0")

    class Protocol(HeaderDeadlineProtocol):
        header_timeout = read_timeout

    return uvicorn.Config(
        app,
        http=Protocol,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        limit_concurrency=max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=5,
    )


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's headers: when a
    connection has not sent a whole request head `header_timeout` seconds after it opened or
    after its last answer, it is answered 408 and closed."""

    header_timeout: float = DEFAULT_READ_TIMEOUT
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

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
        payload = json.dumps({"detail": detail}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + payload)
        self.transport.close()
