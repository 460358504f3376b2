"""Only answer requests addressed to this service by a name it was told to answer to.

A web page elsewhere can make a browser send requests to a service on the browser's own
machine, and by pointing its own domain name at 127.0.0.1 (DNS rebinding) read the answers as
if they came from that page. Such requests still carry the page's name in their ``Host``
header. `HostCheck` is plain ASGI middleware that answers 400 with a JSON message to any
request whose ``Host`` is not one of the allowed names (any port), before its body is read.
"""

from __future__ import annotations

from collections.abc import Iterable

from siamnet.serve.limits import ASGIApp, Receive, Scope, Send, send_json

#: The names of this machine's loopback interface, always allowed.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class HostCheck:
    """Refuse requests whose ``Host`` header is not in `allowed` (names or addresses, without
    a port). ``*.example.org`` allows every name under example.org; ``*`` allows any name."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = LOOPBACK_HOSTS) -> None:
        names = {normalise_host(name) for name in allowed}
        self.app = app
        self.any = "*" in names
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self.names = frozenset(name for name in names if not name.startswith("*"))

    def allows(self, name: str) -> bool:
        """Whether a host name (as `host_name` gives it) is one this service answers to."""
        return self.any or name in self.names or name.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers") or [] if k == b"host"]
        header = values[0].decode("latin-1") if len(values) == 1 else None
        name = host_name(header) if header is not None else None
        if name is not None and self.allows(name):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_json(send, 400, _refusal(header, name, len(values)))


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header value, lower case, without port, brackets or a final dot:
    ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost:80"`` -> ``"localhost"``; None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, port = value[1:end], value[end + 1 :]
    else:
        name, colon, rest = value.partition(":")
        port = colon + rest
    if port and not (port[0] == ":" and (port[1:].isdigit() or port == ":")):
        return None
    name = name.rstrip(".")
    if not name or any(c.isspace() or c in "/\\@?#" for c in name):
        return None
    return name


def normalise_host(name: str) -> str:
    """An allowed name as `host_name` would give it: lower case, without a port, IPv6 without
    brackets, no final dot (``"[::1]"`` -> ``"::1"``, ``"Example.ORG.:80"`` -> ``"example.org"``).
    """
    value = name.strip().lower()
    if value.startswith("[") or value.count(":") == 1:
        value = host_name(value) or value
    return value.rstrip(".") or value


def _refusal(header: str | None, name: str | None, count: int) -> str:
    if count == 0:
        return "missing Host header: a request must name the host it is sent to"
    if count > 1:
        return "more than one Host header: a request must name one host"
    shown = " ".join((header or "").split())[:100]
    if name is None:
        return f"Host header {shown!r}: expected a host name or address, with an optional port"
    return (
        f"Host {shown!r} is not a name this service answers to; if clients reach it by that "
        f"name, start it with --allowed-host {name}"
    )
