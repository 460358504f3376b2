"""/health answers while the model is busy: the service runs in this process (the same app and
server configuration as `siamnet serve`, on a loopback port) so that the test can hold the
model's lock (the one its micro-batching worker takes for each model call), pile up more
requests than there are worker threads, and ask for /health while none of them can finish."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx
import pytest
import uvicorn

from siamnet.cli.serve_cmd import listening_socket, service_url
from siamnet.serve.app import build_app
from siamnet.serve.server import server_config
from siamnet.serve.service import ModelService

from service_process import ShapeFiles


class CountingLock:
    """A lock that counts the threads waiting for it; the test takes `inner` to hold it."""

    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.waiting = 0
        self.changed = threading.Condition()

    def __enter__(self) -> None:
        with self.changed:
            self.waiting += 1
            self.changed.notify_all()
        self.inner.acquire()
        with self.changed:
            self.waiting -= 1

    def __exit__(self, *exc: object) -> None:
        self.inner.release()

    def wait_for_waiting(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.waiting >= count, timeout)


@dataclass
class LocalService:
    url: str
    lock: CountingLock
    worker_threads: int
    service: ModelService


@pytest.fixture(scope="module")
def local_service(shape_files: ShapeFiles) -> Iterator[LocalService]:
    service = ModelService.load(shape_files.checkpoint, support_dir=shape_files.support)
    lock = CountingLock()
    service.batcher.lock = lock  # type: ignore[assignment]  # the model's lock, now countable
    app = build_app(service, max_connections=500)

    @app.get("/worker-threads")
    async def worker_threads() -> dict[str, Any]:
        return {"tokens": anyio.to_thread.current_default_thread_limiter().total_tokens}

    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(server_config(app, max_connections=500))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = service_url(sock)
    for _ in range(600):
        if server.started:
            break
        thread.join(0.05)
    assert server.started
    tokens = httpx.get(url + "worker-threads", timeout=30).json()["tokens"]
    yield LocalService(url, lock, int(tokens), service)
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_health_answers_while_every_worker_thread_waits_for_the_model(
    local_service: LocalService, shape_files: ShapeFiles
) -> None:
    q = shape_files.queries
    files = {"a": ("a.png", q["bar0"].read_bytes()), "b": ("b.png", q["ring0"].read_bytes())}
    slow = local_service.worker_threads + 4  # more than the threads: some wait for a thread
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=slow + 4))

    def compare(_: int) -> httpx.Response:
        return client.post(local_service.url + "compare", files=files)

    lock = local_service.lock
    lock.inner.acquire()  # the model is busy: no compare can finish
    pool = ThreadPoolExecutor(max_workers=slow)
    try:
        pending = [pool.submit(compare, i) for i in range(slow)]
        # the batcher waits for the model; every worker thread is in a request, waiting for it
        assert lock.wait_for_waiting(1, timeout=120), lock.waiting
        batcher = local_service.service.batcher
        for _ in range(2400):
            if batcher.waiting() == local_service.worker_threads:
                break
            time.sleep(0.05)
        assert batcher.waiting() == local_service.worker_threads
        for _ in range(3):
            health = client.get(local_service.url + "health", timeout=30)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            info = client.get(local_service.url + "info", timeout=30)
            assert info.status_code == 200 and info.json()["support"]["images"] == 12
        assert not any(future.done() for future in pending)
        assert lock.waiting == 1 and batcher.waiting() == local_service.worker_threads
    finally:
        lock.inner.release()
        answers = [future.result() for future in pending]
        pool.shutdown()
        client.close()
    assert [a.status_code for a in answers] == [200] * slow
    assert len({a.json()["score"] for a in answers}) == 1 and answers[0].json()["same"] is False
