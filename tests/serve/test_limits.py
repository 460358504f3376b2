"""The service's guards against clients that stall, pile up or address it by another name, each
on a real `siamnet serve` subprocess with raw sockets and a real HTTP client: a request whose
headers or body stop arriving is answered 408 and closed by its deadline while others are
served, requests beyond the limit wait for a turn and are answered 503 in JSON when none comes in
time, and --allowed-host adds names."""

from __future__ import annotations

import json
import select
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from service_process import SIAMNET, Service, ShapeFiles

#: The read deadline of the service these tests start, in seconds (short, so tests are quick).
READ_TIMEOUT = 2


@pytest.fixture(scope="module")
def strict_service(shape_files: ShapeFiles) -> Iterator[Service]:
    """The service with a short read deadline and extra allowed names."""
    args = [str(shape_files.checkpoint), "--support", "support", "--device", "cpu"]
    args += ["--read-timeout", str(READ_TIMEOUT)]
    args += ["--allowed-host", "models.example.org", "--allowed-host", "*.lab.example"]
    svc = Service(args, cwd=shape_files.root)
    yield svc
    assert svc.stop() == 130, "".join(svc.log)
    assert "Traceback" not in "".join(svc.log)


#: The request limit of `limited_service`, and how long a request beyond it waits for a turn.
MAX_CONNECTIONS = 4
QUEUE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def limited_service(shape_files: ShapeFiles) -> Iterator[Service]:
    """The service with few requests at once and a short queue (and the default read deadline,
    far longer than the test that holds them)."""
    args = [str(shape_files.checkpoint), "--device", "cpu"]
    args += ["--max-connections", str(MAX_CONNECTIONS), "--queue-timeout", str(QUEUE_TIMEOUT)]
    svc = Service(args, cwd=shape_files.root)
    yield svc
    assert svc.stop() == 130, "".join(svc.log)
    assert "Traceback" not in "".join(svc.log)


def connect(service: Service) -> socket.socket:
    """A raw TCP connection to the service (a safety timeout on every read, not an assertion)."""
    url = urlsplit(service.url)
    return socket.create_connection((url.hostname, url.port), timeout=60)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the service sends on `sock` until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def final_answer(data: bytes) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the last answer in `data` (after any ``100 Continue``)."""
    while data.startswith(b"HTTP/1.1 100"):
        data = data.split(b"\r\n\r\n", 1)[1]
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def multipart_head(service: Service, length: int, expect_continue: bool = False) -> bytes:
    port = urlsplit(service.url).port
    head = (
        f"POST /compare HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {length}\r\n"
    )
    if expect_continue:
        head += "Expect: 100-continue\r\n"
    return (head + "\r\n").encode()


def upload(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/png")


def compare_ok(service: Service, shape_files: ShapeFiles) -> bool:
    q = shape_files.queries
    files = {"a": upload(q["bar0"]), "b": upload(q["bar1"])}
    answer = httpx.post(service.url + "compare", files=files, timeout=30)
    return answer.status_code == 200 and answer.json()["same"] is True


def test_a_stalled_body_is_answered_408_while_others_are_served(
    strict_service: Service, shape_files: ShapeFiles
) -> None:
    stalled = []
    for _ in range(3):  # headers, then part of the body, then nothing
        sock = connect(strict_service)
        sock.sendall(multipart_head(strict_service, 10_000) + b"--xyz\r\nContent-Disposition")
        stalled.append(sock)
    try:
        for _ in range(3):
            health = httpx.get(strict_service.url + "health", timeout=30)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            assert compare_ok(strict_service, shape_files)
        for sock in stalled:
            status, body = final_answer(read_until_closed(sock))
            assert status == 408
            assert body["detail"] == (
                f"request body not received within {READ_TIMEOUT} seconds of its headers (the "
                "service's --read-timeout); send the whole request without pausing"
            )
    finally:
        for sock in stalled:
            sock.close()
    assert compare_ok(strict_service, shape_files)


def test_a_trickled_body_is_answered_408_before_it_ends(
    strict_service: Service, shape_files: ShapeFiles
) -> None:
    with connect(strict_service) as sock:
        sock.sendall(multipart_head(strict_service, 100_000))
        sent = 0
        while sent < 100_000:  # a byte at a time, until the service answers
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                break
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        status, body = final_answer(read_until_closed(sock))
    assert sent < 100_000
    assert status == 408 and "--read-timeout" in body["detail"]
    assert compare_ok(strict_service, shape_files)


def test_stalled_headers_are_answered_408_and_closed(
    strict_service: Service, shape_files: ShapeFiles
) -> None:
    silent, partial = connect(strict_service), connect(strict_service)
    try:
        partial.sendall(b"POST /compare HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        assert compare_ok(strict_service, shape_files)
        for sock in (silent, partial):
            status, body = final_answer(read_until_closed(sock))
            assert status == 408
            assert body["detail"].startswith(
                f"request headers not received within {READ_TIMEOUT} seconds"
            )
    finally:
        silent.close()
        partial.close()


def test_a_kept_alive_connection_has_a_deadline_for_its_next_request(
    strict_service: Service,
) -> None:
    port = urlsplit(strict_service.url).port
    with connect(strict_service) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next request, never finished
        rest = read_until_closed(sock)
    assert final_answer(rest)[0] == 408


def hold_requests(service: Service, count: int) -> list[socket.socket]:
    """`count` requests whose bodies never come (each holds a turn until its socket closes)."""
    held = []
    for _ in range(count):
        sock = connect(service)
        sock.sendall(multipart_head(service, 10_000, expect_continue=True))
        # 100 Continue: the service is reading this request's body
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        held.append(sock)
    return held


def test_requests_beyond_the_limit_wait_then_get_json_503_until_a_turn_frees(
    limited_service: Service, shape_files: ShapeFiles
) -> None:
    held = hold_requests(limited_service, MAX_CONNECTIONS)  # every turn taken
    try:
        q = shape_files.queries
        files = {"a": upload(q["bar0"]), "b": upload(q["bar1"])}
        answer = httpx.post(limited_service.url + "compare", files=files, timeout=30)
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["detail"].startswith(
            f"the service is busy: no turn within {QUEUE_TIMEOUT:g} seconds (the service's "
            f"--queue-timeout) with {MAX_CONNECTIONS} requests in progress"
        )
        health = httpx.get(limited_service.url + "health", timeout=30)  # never waits
        assert health.status_code == 200
        held.pop().close()  # a turn frees: the next request is served
        assert compare_ok(limited_service, shape_files)
    finally:
        for sock in held:
            sock.close()


def test_allowed_host_adds_names_and_keeps_loopback(strict_service: Service) -> None:
    def status(host: str) -> int:
        return httpx.get(
            strict_service.url + "info", headers={"Host": host}, timeout=30
        ).status_code

    for host in [
        "models.example.org",
        "Models.Example.Org:443",
        "a.lab.example",
        "b.c.lab.example",
    ]:
        assert status(host) == 200, host
    for host in ["127.0.0.1:1", "localhost", "[::1]"]:
        assert status(host) == 200, host
    for host in ["example.org", "lab.example", "evil.models.example.org", "xlab.example"]:
        assert status(host) == 400, host


def outgoing_address() -> str | None:
    """This machine's address on its default route, if it has one other than loopback (found
    by connecting a UDP socket, which sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_non_loopback_host_is_allowed_by_its_address(shape_files: ShapeFiles) -> None:
    address = outgoing_address()
    if address is None:
        pytest.skip("this machine has no address other than loopback")
    svc = Service([str(shape_files.checkpoint), "--host", address], cwd=shape_files.root)
    try:
        assert svc.url.startswith(f"http://{address}:")  # and it answered /health by that name
        assert httpx.get(svc.url + "info", timeout=30).status_code == 200
        local = httpx.get(svc.url + "health", headers={"Host": "localhost"}, timeout=30)
        assert local.status_code == 200
        other = httpx.get(svc.url + "health", headers={"Host": "rebind.example"}, timeout=30)
        assert other.status_code == 400
    finally:
        assert svc.stop() == 130, "".join(svc.log)
    assert any("has no authentication" in line for line in svc.log), svc.log


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--allowed-host", "a b"], "--allowed-host 'a b': expected a host name or address"),
        (["--allowed-host", "ex*.org"], "--allowed-host 'ex*.org': '*' may only start"),
        (["--allowed-host", "*.a.*.org"], "--allowed-host '*.a.*.org': '*' may only start"),
        (["--allowed-host", "*.a/b"], "--allowed-host '*.a/b': expected a host name"),
        (["--allowed-host", "*."], "--allowed-host '*.': expected a host name"),
        (["--read-timeout", "0"], "--read-timeout 0.0: expected seconds above 0"),
        (["--read-timeout", "nan"], "--read-timeout nan: expected seconds above 0"),
        (["--max-connections", "0"], "--max-connections 0: expected at least 1"),
        (["--queue-timeout", "-1"], "--queue-timeout -1.0: expected 0 to 3600 seconds"),
        (["--queue-timeout", "nan"], "--queue-timeout nan: expected 0 to 3600 seconds"),
        (["--batch-window-ms", "-2"], "--batch-window-ms -2.0: expected 0 to 1000"),
        (["--batch-window-ms", "nan"], "--batch-window-ms nan: expected 0 to 1000"),
        (["--max-batch", "0"], "--max-batch 0: expected at least 1 image"),
    ],
)
def test_bad_limit_options_are_one_line_errors(
    shape_files: ShapeFiles, option: list[str], message: str
) -> None:
    result = subprocess.run(
        [str(SIAMNET), "serve", "model.pt", "--port", "0", *option],
        cwd=shape_files.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"siamnet: error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
