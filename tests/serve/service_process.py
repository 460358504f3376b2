"""Files for the service tests (a trained shapes model, its support set, gallery and query
images) and `Service`, a `siamnet serve` subprocess on a free loopback port."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamnet.checkpoint import load_checkpoint
from siamnet.gallery import build_gallery

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapes_model import (  # noqa: E402  (shared by the tests, found on the path above)
    SHAPES,
    shape_png,
    shape_set,
    write_checkpoint,
    write_shape_folder,
)

SIAMNET = Path(sys.executable).parent / "siamnet"
MAX_UPLOAD_BYTES = 500_000


@dataclass
class ShapeFiles:
    """Everything the service tests read: a checkpoint, folders and query images."""

    root: Path
    checkpoint: Path
    support: Path
    gallery: Path
    gallery_images: Path
    queries: dict[str, Path]
    not_image: Path
    empty: Path
    large_noise: Path
    medium_noise: Path


def make_shape_files(root: Path) -> ShapeFiles:
    """Write every file the tests need under `root`."""
    checkpoint = write_checkpoint(root / "model.pt")
    support = write_shape_folder(root / "support", per_class=3, seed=11)
    gallery_images = write_shape_folder(root / "gallery_images", per_class=4, seed=12)
    images, labels = shape_set(4, seed=12)
    names = [f"{SHAPES[k]}_{i}.png" for i, k in enumerate(labels.tolist())]
    build_gallery(
        load_checkpoint(checkpoint),
        images,
        [SHAPES[k] for k in labels.tolist()],
        names,
        out=root / "gallery",
    )
    queries = {}
    for i, shape in enumerate(SHAPES):
        for copy in range(2):
            name = f"{shape}{copy}"
            queries[name] = shape_png(root / f"{name}.png", shape, seed=100 + 10 * i + copy)
    not_image = root / "notes.png"
    not_image.write_text("these are notes, not a picture\n")
    empty = root / "empty.png"
    empty.write_bytes(b"")
    rng = np.random.default_rng(0)
    large_noise = root / "large_noise.png"  # incompressible, well over the upload cap
    Image.fromarray(rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(large_noise)
    medium_noise = root / "medium_noise.png"  # under the cap, far larger than the model input
    Image.fromarray(rng.integers(0, 256, (300, 300), dtype=np.uint8)).save(medium_noise)
    assert large_noise.stat().st_size > MAX_UPLOAD_BYTES > 2 * medium_noise.stat().st_size
    return ShapeFiles(
        root,
        checkpoint,
        support,
        root / "gallery",
        gallery_images,
        queries,
        not_image,
        empty,
        large_noise,
        medium_noise,
    )


class Service:
    """A `siamnet serve` subprocess; `url` ends with a slash."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [str(SIAMNET), "serve", *args, "--port", "0"],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url(timeout=120)
        self._wait_for_health(timeout=30)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.log.append(line)
            if line.startswith("siamnet: serving at "):
                return line.split()[3]
        self.stop()
        raise RuntimeError("siamnet serve did not start:\n" + "".join(self.log))

    def _wait_for_health(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def stop(self) -> int:
        """Stop the service as Ctrl+C does; its exit status (130 after a clean shutdown).
        Everything it wrote on stderr is then in `log`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        while not self.lines.empty():
            self.log.append(self.lines.get_nowait())
        return self.process.returncode


def first_support_image(support: Path, shape: str) -> torch.Tensor:
    """The first file (by name) of a support class, as uint8 ``[H, W]``."""
    first = sorted((support / shape).iterdir())[0]
    return torch.from_numpy(np.array(Image.open(first).convert("L")))


def assert_same_answer(got: object, expected: object, rel: float = 1e-5, where: str = "") -> None:
    """Two JSON answers are equal, numbers within `rel` (relative, and as much absolute near 0):
    a model call on a batch may round differently from one on a single image."""
    if isinstance(expected, float) and isinstance(got, (int, float)):
        assert abs(got - expected) <= rel * max(1.0, abs(expected)), (where, got, expected)
    elif isinstance(expected, dict) and isinstance(got, dict):
        assert got.keys() == expected.keys(), (where, got.keys(), expected.keys())
        for key in expected:
            assert_same_answer(got[key], expected[key], rel, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        assert len(got) == len(expected), (where, got, expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same_answer(g, e, rel, f"{where}[{i}]")
    else:
        assert got == expected, (where, got, expected)
