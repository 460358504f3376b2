"""Overload that degrades rather than collapses, on a real `siamnet serve` subprocess: a burst
of twice the request limit is served (at least the limit, any others refused in JSON), a
connection beyond the open-connection bound is answered 503 in JSON after its body is read, and
uvicorn's own answers to malformed requests are JSON too (raw sockets)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from siamnet.serve.limits import CONNECTIONS_PER_SLOT

from service_process import Service, ShapeFiles

#: The request limit of the service these tests start (small, so that a burst passes it).
LIMIT = 4


@pytest.fixture(scope="module")
def small_service(shape_files: ShapeFiles) -> Iterator[Service]:
    args = [str(shape_files.checkpoint), "--support", "support", "--device", "cpu"]
    args += ["--max-connections", str(LIMIT)]
    svc = Service(args, cwd=shape_files.root)
    yield svc
    assert svc.stop() == 130, "".join(svc.log)
    assert "Traceback" not in "".join(svc.log)


def connect(service: Service) -> socket.socket:
    url = urlsplit(service.url)
    return socket.create_connection((url.hostname, url.port), timeout=60)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer on `sock`, read until the service closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_burst_of_twice_the_limit_is_served(
    small_service: Service, shape_files: ShapeFiles
) -> None:
    q = shape_files.queries
    files = {"a": ("a.png", q["bar0"].read_bytes()), "b": ("b.png", q["cross0"].read_bytes())}
    clients = 2 * LIMIT
    start = threading.Barrier(clients)

    def ask(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:  # a connection of its own
            start.wait(timeout=60)
            return client.post(small_service.url + "compare", files=files)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = list(pool.map(ask, range(clients)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= LIMIT, statuses
    assert set(statuses) <= {200, 503}, statuses
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert ("score" in body) if answer.status_code == 200 else ("busy" in body["detail"])
    served = [a.json() for a in answers if a.status_code == 200]
    assert all(body == served[0] for body in served[1:])


def test_a_connection_beyond_the_open_bound_gets_json_503(
    small_service: Service, shape_files: ShapeFiles
) -> None:
    bound = LIMIT * CONNECTIONS_PER_SLOT
    idle = [connect(small_service) for _ in range(bound)]  # open, no request yet
    try:
        with connect(small_service) as extra:
            body = shape_files.queries["bar0"].read_bytes()
            port = urlsplit(small_service.url).port
            extra.sendall(
                f"POST /compare HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status, headers, payload = read_answer(extra)
        assert status == 503 and headers["content-type"] == "application/json"
        assert json.loads(payload)["detail"].startswith(
            f"the service is busy: more than {bound} connections are open"
        )
    finally:
        for sock in idle:
            sock.close()
    answer = httpx.get(small_service.url + "info", timeout=30)  # served again once they close
    for _ in range(200):  # the service sees the closed connections soon after
        if answer.status_code == 200:
            break
        time.sleep(0.05)
        answer = httpx.get(small_service.url + "info", timeout=30)
    assert answer.status_code == 200


MALFORMED = {
    "two Host headers": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: localhost\r\n\r\n",
    "a junk request line": b"this is not http\r\n\r\n",
    "Content-Length -1": (
        b"POST /compare HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n"
    ),
    "a bad chunked body": (
        b"POST /compare HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\nzz\r\nnot a chunk\r\n"
    ),
    "no Host header": b"GET /health HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_requests_get_json_400(small_service: Service, request_bytes: bytes) -> None:
    with connect(small_service) as sock:
        sock.sendall(request_bytes)
        status, headers, payload = read_answer(sock)
    assert status == 400, payload
    assert headers["content-type"] == "application/json"
    detail = json.loads(payload)["detail"]
    assert detail.startswith("malformed HTTP request (") or "Host header" in detail, detail
    assert "\n" not in detail
    assert httpx.get(small_service.url + "health", timeout=30).status_code == 200
