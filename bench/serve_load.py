"""Load on the HTTP service: requests per second and p50/p99 latency of ``POST /compare``.

`siamnet serve` runs as its own process on a loopback port; this process is the load: 1 client,
then 8 concurrent clients (threads with keep-alive connections) posting the same two 28x28 PNG
images for a fixed time. The baseline, in the same run, is the library doing the same work
without HTTP: decode both images and call `siamnet.infer.compare`, in one loop. The ratio says
what the service keeps of the library's speed. Bounded in time and in requests; loopback only.

    python bench/serve_load.py                 # 8 clients for 20 s
    python bench/serve_load.py --seconds 5 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamnet.checkpoint import load_checkpoint, save_checkpoint
from siamnet.images import read_image_bytes
from siamnet.infer import compare
from siamnet.models.siamese import ModelSpec, build_model

from results import machine, table, write_section

MAX_REQUESTS_PER_CLIENT = 200_000
REQUEST_TIMEOUT = 10.0


def make_inputs(root: Path) -> tuple[Path, bytes, bytes]:
    """A conv4 checkpoint (28x28 grey, euclidean head) and two PNG images."""
    torch.manual_seed(0)
    spec = ModelSpec(model="conv4", loss="contrastive", image_size=(28, 28), embedding_norm=True)
    checkpoint = root / "model.pt"
    metadata = {"model_spec": spec.to_dict(), "classes": ["a", "b"], "threshold": -0.5}
    save_checkpoint(checkpoint, build_model(spec).eval(), {**metadata, "training_args": {}})
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return checkpoint, pngs[0], pngs[1]


def library_baseline(checkpoint: Path, a: bytes, b: bytes, seconds: float) -> dict[str, float]:
    """Decode and compare in one loop, no HTTP, for `seconds`: calls per second and latency."""
    ckpt = load_checkpoint(checkpoint, "cpu")

    def call() -> None:
        x, y = read_image_bytes(a, 1, (28, 28)), read_image_bytes(b, 1, (28, 28))
        with torch.inference_mode():
            compare(ckpt, x, y)

    for _ in range(20):
        call()
    latencies = []
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end and len(latencies) < MAX_REQUESTS_PER_CLIENT:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return summarise(latencies, 0, time.perf_counter() - start)


def best_of(rounds: int, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The round with the most calls per second (other work on a shared machine only ever
    slows a round down)."""
    return max((measure() for _ in range(rounds)), key=lambda r: r["per_s"])


def multipart(a: bytes, b: bytes) -> tuple[bytes, str]:
    boundary = "siamnetbenchboundary"
    parts = []
    for name, data in (("a", a), ("b", b)):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load(url: str, a: bytes, b: bytes, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads posting /compare on keep-alive connections for `seconds`."""
    host = urllib.parse.urlsplit(url)
    body, content_type = multipart(a, b)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)
    end = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=REQUEST_TIMEOUT)
        barrier.wait()
        while time.perf_counter() < end[0] and len(latencies[i]) < MAX_REQUESTS_PER_CLIENT:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/compare", body, headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=REQUEST_TIMEOUT)
                ok = False
            if ok:
                latencies[i].append(time.perf_counter() - t0)
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    end[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join(timeout=seconds + 4 * REQUEST_TIMEOUT)
    elapsed = time.perf_counter() - start
    return summarise([x for per in latencies for x in per], sum(errors), elapsed)


def summarise(latencies: list[float], errors: int, elapsed: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else float("nan")
    return {
        "requests": len(ms),
        "errors": errors,
        "per_s": len(ms) / elapsed,
        "p50": statistics.median(ms) if ms else float("nan"),
        "p99": p99,
    }


class ServiceProcess:
    """`siamnet serve CKPT --port 0` as a subprocess; `url` once it answers /health."""

    def __init__(self, checkpoint: Path) -> None:
        script = Path(sys.executable).parent / "siamnet"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "siamnet"]
        self.process = subprocess.Popen(
            [*command, "serve", str(checkpoint), "--port", "0", "--device", "cpu"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in self.process.stderr], daemon=True
        ).start()
        deadline = time.monotonic() + 120
        self.url = ""
        while not self.url:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("siamnet serve did not start")
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("siamnet: serving at "):
                self.url = line.split()[3]
        urllib.request.urlopen(self.url + "health", timeout=10).read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load time with N clients")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rounds, short = 5, min(1.0, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, a, b = make_inputs(Path(tmp))
        baseline = best_of(rounds, lambda: library_baseline(checkpoint, a, b, short))
        service = ServiceProcess(checkpoint)
        try:
            load(service.url, a, b, 1, 1.0)  # warm-up
            single = best_of(rounds, lambda: load(service.url, a, b, 1, short))
            loaded = load(service.url, a, b, args.clients, args.seconds)
        finally:
            service.stop()

    def row(name: str, clients: int | str, seconds: float, r: dict[str, float]) -> list[object]:
        return [
            name,
            clients,
            f"{seconds:g}",
            int(r["requests"]),
            int(r["errors"]),
            f"{r['per_s']:.0f}",
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
        ]

    rows = [
        row("library: decode + compare(), no HTTP (baseline)", "1 loop", short, baseline),
        row("service: POST /compare", 1, short, single),
        row("service: POST /compare", args.clients, args.seconds, loaded),
    ]
    header = ["what", "clients", "seconds", "requests", "errors", "per s", "p50 ms", "p99 ms"]
    ratio = loaded["per_s"] / baseline["per_s"]
    scaling = loaded["per_s"] / single["per_s"]
    body = "\n\n".join(
        [
            "`POST /compare` of two 28x28 grey PNG images (conv4, euclidean head, CPU), the "
            "service in its own process on 127.0.0.1, the clients in a second process (threads "
            "with keep-alive connections). Both processes share the machine's cores. The "
            f"one-loop and one-client rows are the best of {rounds} rounds of {short:g} s; the "
            f"{args.clients}-client row is one run of {args.seconds:g} s.",
            table(header, rows),
            f"Service with {args.clients} clients / library loop: **{ratio:.2f}x** the "
            f"throughput; {args.clients} clients / 1 client: {scaling:.2f}x. "
            "Model calls run one at a time under a lock; decoding, multipart parsing and HTTP "
            "are the rest of each request.",
            f"Machine: {machine()}; load average before the run {load_before:.2f}.",
            f"Reproduce: `python bench/serve_load.py --seconds {args.seconds:g} "
            f"--clients {args.clients}`",
        ]
    )
    print(table(header, rows))
    print(f"ratio service/library {ratio:.2f}, {args.clients} clients/1 client {scaling:.2f}")
    if not args.no_write:
        write_section("Service load", body)


if __name__ == "__main__":
    main()
