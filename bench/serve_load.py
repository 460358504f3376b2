"""Load on the HTTP service: requests per second and p50/p99 latency of ``POST /compare``,
with micro-batching on and off, against the library's one-at-a-time loop, in one run.

`siamnet serve` runs as its own process on a loopback port, twice: with micro-batching (the
default window and batch size) and without it (``--max-batch 1``: every request in a model call
of its own). This process is the load: 1, 8 and 32 concurrent clients (threads with keep-alive
connections) posting the same two 28x28 PNG images for a fixed time each. The baseline, in the
same run, is the library doing the same work without HTTP: decode both images and call
`siamnet.infer.compare`, in one loop. The ratios say what the service makes of the library's
speed. Bounded in time and in requests; loopback only.

    python bench/serve_load.py                              # 1, 8, 32 clients, 20 s each
    python bench/serve_load.py --seconds 2 --clients 1 4 --no-write --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
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
    """`siamnet serve CKPT --port 0 OPTIONS` as a subprocess; `url` once it answers /health."""

    def __init__(self, checkpoint: Path, options: list[str]) -> None:
        script = Path(sys.executable).parent / "siamnet"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "siamnet"]
        self.process = subprocess.Popen(
            [*command, "serve", str(checkpoint), "--port", "0", "--device", "cpu", *options],
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


#: The services compared: name, options of `siamnet serve`.
MODES = [
    ("micro-batching on (default)", []),
    ("micro-batching off (--max-batch 1)", ["--max-batch", "1"]),
]


def measure_service(
    checkpoint: Path, options: list[str], a: bytes, b: bytes, clients: list[int], seconds: float
) -> tuple[dict[int, dict[str, float]], dict[str, int]]:
    """Each number of clients against one service process, and its model calls and images."""
    service = ServiceProcess(checkpoint, options)
    try:
        load(service.url, a, b, 1, 1.0)  # warm-up
        results = {n: load(service.url, a, b, n, seconds) for n in clients}
        with urllib.request.urlopen(service.url + "info", timeout=10) as answer:
            info = json.loads(answer.read())
    finally:
        service.stop()
    return results, {"model_calls": info["model_calls"], "images": info["embedded_images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per row")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients per row"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the library loop")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or min(args.clients) < 1:
        parser.error("--seconds, --rounds and --clients must be positive")
    load_before = os.getloadavg()[0]
    short = min(2.0, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, a, b = make_inputs(Path(tmp))
        baseline = best_of(args.rounds, lambda: library_baseline(checkpoint, a, b, short))
        services = {
            name: measure_service(checkpoint, options, a, b, args.clients, args.seconds)
            for name, options in MODES
        }

    def row(name: str, clients: int | str, seconds: float, r: dict[str, float]) -> list[object]:
        return [
            name,
            clients,
            f"{seconds:g}",
            int(r["requests"]),
            int(r["errors"]),
            f"{r['per_s']:.0f}",
            f"{r['per_s'] / baseline['per_s']:.2f}x",
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
        ]

    rows = [row("library: decode + compare(), no HTTP (baseline)", "1 loop", short, baseline)]
    for name, (results, _) in services.items():
        rows += [row(f"service, {name}", n, args.seconds, r) for n, r in results.items()]
    header = [
        "what",
        "clients",
        "seconds",
        "requests",
        "errors",
        "per s",
        "vs library",
        "p50 ms",
        "p99 ms",
    ]
    most = max(args.clients)
    on, off = (services[name][0][most] for name, _ in MODES)
    ratio, ratio_off = on["per_s"] / baseline["per_s"], off["per_s"] / baseline["per_s"]
    calls = {name: counts for name, (_, counts) in services.items()}
    batch = [c["images"] / max(1, c["model_calls"]) for c in calls.values()]
    shown = " ".join(str(n) for n in args.clients)
    body = "\n\n".join(
        [
            "`POST /compare` of two 28x28 grey PNG images (conv4, euclidean head, CPU), the "
            "service in its own process on 127.0.0.1, the clients in a second process (threads "
            "with keep-alive connections). Both processes share the machine's cores. The "
            f"library row is the best of {args.rounds} rounds of {short:g} s; each service row "
            f"one run of {args.seconds:g} s.",
            table(header, rows),
            f"With {most} clients the service answers **{ratio:.2f}x** the library loop's "
            f"throughput with micro-batching ({ratio_off:.2f}x without: --max-batch 1). Images "
            f"per model call over the whole run: {batch[0]:.1f} with batching, {batch[1]:.1f} "
            "without.",
            f"Machine: {machine()}; load average before the run {load_before:.2f}.",
            f"Reproduce: `python bench/serve_load.py --seconds {args.seconds:g} --clients {shown}`",
        ]
    )
    print(table(header, rows))
    print(f"{most} clients: service/library {ratio:.2f} (batching), {ratio_off:.2f} (no batching)")
    if args.json is not None:
        record = {
            "library": baseline,
            "services": {
                name: {"clients": {str(n): r for n, r in results.items()}, **calls[name]}
                for name, (results, _) in services.items()
            },
            "ratio_most_clients": {"batching": ratio, "no_batching": ratio_off},
            "seconds": args.seconds,
            "machine": machine(),
            "load_before": load_before,
        }
        args.json.write_text(json.dumps(record, indent=2))
    if not args.no_write:
        write_section("Service load", body)


if __name__ == "__main__":
    main()
