"""`siamnet serve`: a trained model over HTTP, with a page to try it (the serve extra)."""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import socket
import sys
from typing import Any

from siamnet.cli.common import CHECKPOINT_HELP, add_image_options, add_verb, report_skipped
from siamnet.errors import ArgumentError
from siamnet.serve.limits import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    check_batching,
)

SECURITY_NOTE = (
    "The service has no authentication: anyone who can reach it can use it. It listens on\n"
    "127.0.0.1 (this machine only) by default and answers only requests addressed to\n"
    "127.0.0.1, localhost or [::1] (add names with --allowed-host). To expose it, keep it on\n"
    "127.0.0.1 behind a reverse proxy that authenticates, and allow the name the proxy sends."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "serve",
        "Serve a trained model over HTTP: POST /compare, /embed, /classify and /search, GET "
        "/health and\n/info, the API description at /docs and a page to try the model at /. "
        "Requests arriving\ntogether are embedded in one model call. Needs the serve extra: "
        "pip install 'siamnet[serve]'.",
        "siamnet serve runs/digits --support support/\n"
        "  siamnet serve runs/digits --support support/ --gallery gallery/ --port 8080\n"
        "  siamnet serve runs/faces --gallery people/ --max-upload-mb 2 "
        "--allowed-host faces.example.org\n"
        "    (behind an authenticating proxy that serves faces.example.org and forwards to "
        "127.0.0.1:8000)",
    )
    p.description = p.description.replace("\n\nexample:", f"\n\n{SECURITY_NOTE}\n\nexample:", 1)
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument(
        "--support",
        metavar="DIR",
        help="folder with one sub-folder of images per class, embedded once at start-up "
        "(enables /classify and the drawing pad)",
    )
    p.add_argument(
        "--gallery",
        metavar="DIR",
        help="a gallery folder made by 'siamnet index build', or a folder of images embedded "
        "at start-up (enables /search)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; any other than loopback makes the service, which has no "
        "authentication, reachable from other machines (that address is then allowed as a "
        "Host too)",
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=5.0,
        help="largest request accepted, all its images together (MB of 1,000,000 bytes)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="'same' when the score is at least this; if not given, the checkpoint's "
        "calibrated one",
    )
    p.add_argument(
        "--scoring",
        choices=["mean", "prototype"],
        default="mean",
        help="how /classify scores a class: mean similarity to its support images, or "
        "similarity to their mean embedding",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header is NAME (any port), e.g. the public name a "
        "reverse proxy forwards; repeat for more names; '*.example.org' allows every name under "
        "example.org, '*' any name. Always allowed: 127.0.0.1, localhost, [::1]",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="requests handled at once; more wait for a turn (up to --queue-timeout) and are "
        "then answered 503; GET /health never waits",
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=DEFAULT_QUEUE_TIMEOUT,
        metavar="SECONDS",
        help="how long a request beyond --max-connections waits for a turn before it is "
        "answered 503",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=DEFAULT_BATCH_WINDOW_MS,
        metavar="MS",
        help="a model call waits up to this long for the images of requests still being read, "
        "to embed them together (never when no other request is in progress)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        metavar="N",
        help="most images in one model call (1: each request on its own, no micro-batching); "
        "a request with more images runs on its own",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help="a request's headers, and then its body, must each arrive within this many "
        "seconds, or it is answered 408 and its connection closed",
    )
    add_image_options(p)
    p.add_argument("--access-log", action="store_true", help="log every request on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from siamnet.infer import finite_number
    from siamnet.progress import set_quiet
    from siamnet.serve import require_serve_extra

    require_serve_extra()
    max_bytes = _max_upload_bytes(args.max_upload_mb)
    _check_limits(args.max_connections, args.read_timeout, args.queue_timeout)
    check_batching(args.batch_window_ms, args.max_batch)
    args.threshold = finite_number(args.threshold, "--threshold")
    hosts = allowed_hosts(args.host, args.allowed_host or [])
    sock = listening_socket(args.host, args.port)  # before the model loads: fail fast
    try:
        app = _make_app(args, max_bytes, hosts)
        set_quiet(True)  # start-up's bars are done; no bar for each request's model call
        _serve(app, sock, args.max_connections, args.read_timeout, args.access_log)
    finally:
        sock.close()
    return 0


def _make_app(args: argparse.Namespace, max_bytes: int, hosts: list[str]) -> Any:
    from siamnet.device import resolve_device
    from siamnet.serve.app import build_app
    from siamnet.serve.service import ModelService

    service = ModelService.load(
        args.checkpoint,
        args.support,
        args.gallery,
        resolve_device(args.device),
        args.threshold,
        args.invert,
        args.scoring,
        args.batch_window_ms,
        args.max_batch,
    )
    for state in (service.support, service.gallery):
        if state is not None:
            report_skipped(state.failures)
    return build_app(
        service, max_bytes, hosts, args.read_timeout, args.max_connections, args.queue_timeout
    )


def _serve(
    app: Any, sock: socket.socket, max_connections: int, read_timeout: float, access_log: bool
) -> None:
    import uvicorn

    from siamnet.serve.server import server_config

    class AnnouncingServer(uvicorn.Server):
        """Says where the service is once it accepts connections."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                url = service_url(sock)
                print(f"siamnet: serving at {url} (API: {url}docs); Ctrl+C stops", file=sys.stderr)
                sys.stderr.flush()

    server = AnnouncingServer(server_config(app, max_connections, read_timeout, access_log))
    server.run(sockets=[sock])
    if server.should_exit:
        # Stopped by Ctrl+C or SIGTERM. uvicorn re-raises the signal once it has shut down, but
        # a signal that lands while it restores its handlers can be lost: say it the same way.
        raise KeyboardInterrupt


def _max_upload_bytes(megabytes: float) -> int:
    if not megabytes > 0 or megabytes > 1e6:
        raise ArgumentError(f"--max-upload-mb {megabytes}: expected a size above 0 MB")
    return max(1, int(megabytes * 1_000_000))


def _check_limits(max_connections: int, read_timeout: float, queue_timeout: float) -> None:
    if max_connections < 1:
        raise ArgumentError(f"--max-connections {max_connections}: expected at least 1")
    if not (read_timeout > 0 and math.isfinite(read_timeout)):
        raise ArgumentError(f"--read-timeout {read_timeout}: expected seconds above 0")
    if not (0 <= queue_timeout <= 3600):
        raise ArgumentError(f"--queue-timeout {queue_timeout}: expected 0 to 3600 seconds")


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The names the service answers to: loopback, `extra` (``--allowed-host``) and `host`
    itself when it is a name or an address of a single interface other than loopback."""
    names = ["127.0.0.1", "localhost", "::1"]
    for name in extra:
        bare = name.strip()
        if bare.startswith("[") and bare.endswith("]"):
            bare = bare[1:-1]
        under = bare[2:] if bare.startswith("*.") else bare
        if bare != "*" and "*" in under:
            raise ArgumentError(f"--allowed-host {name!r}: '*' may only start the name, as '*.'")
        if bare != "*" and not _HOST_NAME.fullmatch(under):
            raise ArgumentError(
                f"--allowed-host {name!r}: expected a host name or address without a port, "
                "'*.example.org' or '*'"
            )
        names.append(bare)
    if not _is_loopback(host) and host.strip() not in ("", "0.0.0.0", "::"):
        names.append(host.strip())
    return names


#: A host name or an IPv4 or IPv6 address, as --allowed-host takes it (no port).
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (port 0: a free one), or a clear `ArgumentError`."""
    if not 0 <= port <= 65535:
        raise ArgumentError(f"--port {port}: expected a port number from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ArgumentError(f"--host {host!r}: not an address of this machine ({exc})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ArgumentError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
            "choose another port, or 0 for any free one"
        ) from exc
    if not _is_loopback(host):
        print(
            f"siamnet: warning: listening on {host}, reachable from other machines; the service "
            "has no authentication: put it behind a reverse proxy that authenticates",
            file=sys.stderr,
        )
    return sock


def service_url(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket (a wildcard address shown as loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
