"""Overload that degrades rather than collapses: a bounded number of requests at once, a
bounded queue for the rest, and a JSON 503 for what neither holds.

`Admission` is plain ASGI middleware. At most `slots` requests are handled at once; a request
beyond them waits, first come first served, for up to `queue_timeout` seconds for one to
finish, and is then answered 503. At most `max_waiting` requests wait; one more is answered 503
at once. A refused request's body is read and dropped before the answer (up to its size cap and
read deadline), so that a client still sending reads the 503 rather than a reset connection.
``GET /health`` is answered at once, whatever is waiting.

Only requests count, never connections: an idle keep-alive connection, or one whose request
has not arrived yet, takes no turn (`siamnet.serve.server` bounds open connections
separately, far above this limit).
"""

from __future__ import annotations

import asyncio
from collections import deque

from siamnet.serve.limits import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    drain_body,
    send_json,
    with_deadline,
)

#: Requests answered at once whatever the load: cheap, and what a load balancer polls.
EXEMPT = frozenset({("GET", "/health"), ("HEAD", "/health")})

#: Seconds a client told 503 is asked to wait before trying again.
RETRY_AFTER_SECONDS = 1


class Admission:
    """At most `slots` requests handled at once; up to `max_waiting` more wait at most
    `queue_timeout` seconds for a turn; the rest get 503 in JSON with ``Retry-After``.
    `drain_bytes` and `read_timeout` bound the reading of a refused request's body."""

    def __init__(
        self,
        app: ASGIApp,
        slots: int,
        queue_timeout: float,
        max_waiting: int,
        drain_bytes: int,
        read_timeout: float | None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots {slots}: expected at least 1")
        if not queue_timeout >= 0:
            raise ValueError(f"queue_timeout {queue_timeout}: expected seconds, 0 or more")
        self.app = app
        self.slots = slots
        self.queue_timeout = queue_timeout
        self.max_waiting = max(0, max_waiting)
        self.drain_bytes = drain_bytes
        self.read_timeout = read_timeout
        self.busy = 0  # requests being handled
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in EXEMPT:
            await self.app(scope, receive, send)
            return
        refusal = await self._take_turn()
        if refusal is not None:
            await refuse(send, receive, refusal, self.drain_bytes, self.read_timeout)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._end_turn()

    def waiting(self) -> int:
        """Requests waiting for a turn now."""
        return sum(not f.done() for f in self._waiters)

    async def _take_turn(self) -> str | None:
        """Wait for a turn; None once it is this request's, else why it is refused."""
        while self._waiters and self._waiters[0].done():  # gave up waiting
            self._waiters.popleft()
        if self.busy < self.slots and not self._waiters:
            self.busy += 1
            return None
        if self.waiting() >= self.max_waiting:
            return (
                f"the service is busy: {self.busy} requests in progress and {self.waiting()} "
                "waiting (the most it queues); try again shortly"
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.queue_timeout)
            return None
        except asyncio.TimeoutError:
            if turn.done():  # the turn came just as the time ran out: take it
                return None
            turn.cancel()
            return (
                f"the service is busy: no turn within {self.queue_timeout:g} seconds (the "
                f"service's --queue-timeout) with {self.busy} requests in progress; "
                "try again shortly"
            )
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._end_turn()  # handed a turn while being cancelled: pass it on
            turn.cancel()
            raise

    def _end_turn(self) -> None:
        """Hand this request's turn to the first waiting one, or free it."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.busy -= 1


async def refuse(
    send: Send, receive: Receive, detail: str, drain_bytes: int, read_timeout: float | None
) -> None:
    """Read and drop the request's body (within `drain_bytes` and `read_timeout`), then answer
    503 with `detail` in JSON and close the connection."""
    await drain_body(with_deadline(receive, read_timeout), 0, drain_bytes)
    retry = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
    await send_json(send, 503, detail, retry)
