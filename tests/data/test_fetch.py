"""Downloads into the cache, against a real HTTP server on 127.0.0.1 serving files made here."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamnet.data import fetch
from siamnet.data.fetch import (
    cache_dir,
    dataset_dir,
    download,
    extract_zip,
    fetch_files,
)
from siamnet.data.registry import load_dataset
from siamnet.errors import DataError
from siamnet.temps import remove_stale_temps


class FileServer:
    """Serves ``files`` (name -> bytes) at ``/<name>``; ``/short/<name>`` announces more bytes
    than it sends, ``/stall/<name>`` sends half then waits; anything else is 404."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                kind, _, name = self.path.lstrip("/").rpartition("/")
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                extra = 1000 if kind == "short" else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                if kind == "stall":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(2)
                    return
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.stop()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fetch_files -------------------------------------------------------------------------------
def test_good_file_is_cached_verified_and_reused_offline(server, tmp_path):
    body = bytes(range(256)) * 5000  # 1.28 MB: several read chunks
    server.files["a.bin"] = body
    dest = tmp_path / "cache"
    files = {"a.bin": sha256(body)}
    assert fetch_files("demo", server.url, files, dest) == dest
    assert (dest / "a.bin").read_bytes() == body and leftovers(dest) == ["a.bin"]
    server.stop()
    fetch_files("demo", server.url, files, dest)  # present: no network needed
    assert server.requests == ["/a.bin"]


def test_md5_checksums_are_supported(server, tmp_path):
    server.files["b.bin"] = b"hello"
    fetch_files("demo", server.url, {"b.bin": "md5:" + hashlib.md5(b"hello").hexdigest()}, tmp_path)
    assert (tmp_path / "b.bin").read_bytes() == b"hello"


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    server.files["a.bin"] = b"tampered"
    dest = tmp_path / "cache"
    with pytest.raises(
        DataError,
        match=r"a\.bin: checksum mismatch \(sha256 [0-9a-f]{64}, "
        r"expected 0+\); the file was not kept",
    ):
        fetch_files("demo", server.url, {"a.bin": "sha256:" + "0" * 64}, dest)
    assert leftovers(dest) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    body = b"x" * 5000
    server.files["a.bin"] = body
    with pytest.raises(
        DataError,
        match=r"short/a\.bin: download cut short after 5,000 "
        r"(of 6,000 )?bytes",
    ):
        fetch_files("demo", server.url + "short/", {"a.bin": sha256(body)}, tmp_path)
    assert leftovers(tmp_path) == []


def test_stalled_download_times_out_and_leaves_nothing(server, tmp_path):
    body = b"y" * 4000
    server.files["a.bin"] = body
    with pytest.raises(
        DataError,
        match=r"stall/a\.bin: download failed after [\d,]+ bytes "
        r"\(timed out\)",
    ):
        download(server.url + "stall/a.bin", tmp_path / "a.bin", sha256(body), timeout=0.3)
    assert leftovers(tmp_path) == []


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DataError, match=r"/missing\.bin: HTTP error 404"):
        fetch_files("demo", server.url, {"missing.bin": sha256(b"")}, tmp_path)
    assert leftovers(tmp_path) == []


def test_no_server_says_where_to_put_the_files(tmp_path):
    base = f"http://127.0.0.1:{free_port()}/data/"
    dest = tmp_path / "cache" / "mnist"
    files = {"train-images-idx3-ubyte.gz": sha256(b"a"), "train-labels-idx1-ubyte.gz": sha256(b"b")}
    with pytest.raises(DataError) as err:
        fetch_files("mnist", base, files, dest)
    message = str(err.value)
    assert message.startswith("cannot download mnist (")
    assert f"{base}train-images-idx3-ubyte.gz {base}train-labels-idx1-ubyte.gz" in message
    assert f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz in {dest}" in message
    assert "\n" not in message and leftovers(dest) == []


# --- files already in the cache ----------------------------------------------------------------
def test_damaged_cached_file_is_downloaded_again(server, tmp_path):
    body = b"the real thing" * 100
    server.files["a.bin"] = body
    (tmp_path / "a.bin").write_bytes(body[:-1] + b"!")  # one byte changed
    fetch_files("demo", server.url, {"a.bin": sha256(body)}, tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == body and leftovers(tmp_path) == ["a.bin"]
    assert server.requests == ["/a.bin"]
    fetch_files("demo", server.url, {"a.bin": sha256(body)}, tmp_path)  # good now: reused
    assert server.requests == ["/a.bin"]


def test_damaged_cached_file_offline_is_reported_and_not_used(tmp_path):
    base = f"http://127.0.0.1:{free_port()}/"
    target = tmp_path / "a.bin"
    target.write_bytes(b"damaged")
    with pytest.raises(DataError) as err:
        fetch_files("demo", base, {"a.bin": sha256(b"good")}, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{target}: checksum mismatch (sha256 ")
    assert "the file was not used and a fresh copy cannot be downloaded" in message
    assert f"fresh copy of {base}a.bin" in message and "\n" not in message
    assert target.read_bytes() == b"damaged"  # left for a look, never used


def test_damaged_cached_file_with_a_bad_server_names_both(server, tmp_path):
    server.files["a.bin"] = b"also wrong"
    (tmp_path / "a.bin").write_bytes(b"damaged")
    with pytest.raises(
        DataError,
        match=r"a\.bin: checksum mismatch .* downloading a fresh copy "
        r"failed: http://.*/a\.bin: checksum mismatch",
    ):
        fetch_files("demo", server.url, {"a.bin": sha256(b"good")}, tmp_path)
    assert leftovers(tmp_path) == ["a.bin"]


def test_load_dataset_refuses_a_damaged_cache_offline(mnist_server, server, tmp_path):
    load_dataset("mnist")
    server.stop()
    damaged = tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(damaged.read_bytes()))
    raw[-1] ^= 0xFF  # one pixel changed: still a valid gzip of a valid IDX file
    damaged.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=rf"^{re.escape(str(damaged))}: checksum mismatch"):
        load_dataset("mnist")


def test_damaged_cached_zip_is_replaced_then_extracted(server, tmp_path):
    archive = omniglot_zip("images_background", ["Greek", "Latin"])
    server.files["images_background.zip"] = archive
    (tmp_path / "images_background.zip").write_bytes(archive[:100])
    fetch_files("omniglot", server.url, {"images_background.zip": sha256(archive)}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_background"]
    assert (tmp_path / "images_background" / "Greek" / "character01" / "0.png").is_file()


# --- temporaries left by killed runs -----------------------------------------------------------
def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def put(path: Path, hours_old: float = 0.0, folder: bool = False) -> Path:
    """A file (or a folder holding one) at `path`, last modified `hours_old` hours ago."""
    if folder:
        (path / "Greek").mkdir(parents=True)
        (path / "Greek" / "0.png").write_bytes(b"x")
    else:
        path.write_bytes(b"partial")
    if hours_old:
        stamp = time.time() - hours_old * 3600
        os.utime(path, (stamp, stamp))
    return path


def test_stale_temporaries_are_removed_and_live_ones_kept(server, tmp_path):
    body = b"payload"
    server.files["a.bin"] = body
    gone, alive = dead_pid(), os.getpid()
    stale = [
        put(tmp_path / f".a.bin.siamnet-{gone}-abcd1234.tmp"),  # a download killed mid-way
        put(tmp_path / f".images_background.siamnet-{gone}-abcd1234.new", folder=True),
    ]
    kept = [
        put(tmp_path / f".a.bin.siamnet-{alive}-efgh5678.tmp"),  # a download running now
        put(tmp_path / ".notes.txt", 2),  # not a temporary at all
    ]
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    fetch_files("demo", server.url, {"a.bin": sha256(body)}, tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.bin", *(p.name for p in kept)])


def test_a_download_in_progress_is_named_by_its_process_and_kept(server, tmp_path):
    body = b"z" * 4000
    server.files["a.bin"] = body
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            download(server.url + "stall/a.bin", tmp_path / "a.bin", sha256(body), timeout=10)
        except DataError as exc:
            errors.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    temps: list[Path] = []
    for _ in range(500):  # until the temporary file appears (it exists from the start)
        temps = list(tmp_path.glob(".a.bin.*"))
        if temps or not worker.is_alive():
            break
        time.sleep(0.01)
    assert len(temps) == 1
    assert re.fullmatch(rf"\.a\.bin\.siamnet-{os.getpid()}-[a-z0-9_]{{8}}\.tmp", temps[0].name)
    assert remove_stale_temps(tmp_path) == []
    worker.join()
    assert len(errors) == 1 and "cut short" in str(errors[0])  # the stalled server hangs up
    assert leftovers(tmp_path) == []


# --- zip archives ------------------------------------------------------------------------------
def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def omniglot_zip(top: str, alphabets: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for a, alphabet in enumerate(alphabets):
            for c in range(2):
                for k in range(2):
                    name = f"{top}/{alphabet}/character0{c + 1}/{k}.png"
                    zf.writestr(name, png_bytes(a * 10 + c))
    return buf.getvalue()


def test_zip_is_extracted_and_removed(server, tmp_path):
    archive = omniglot_zip("images_background", ["Greek", "Latin"])
    server.files["images_background.zip"] = archive
    fetch_files("omniglot", server.url, {"images_background.zip": sha256(archive)}, tmp_path)
    assert (tmp_path / "images_background" / "Latin" / "character02" / "1.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_background"]


def test_unsafe_zip_members_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("evil/ok.txt", "fine")
        zf.writestr("../escape.txt", "outside")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match=r"evil\.zip: refusing to extract '\.\./escape\.txt'"):
        extract_zip(archive, dest)
    assert leftovers(dest) == [] and not (tmp_path / "escape.txt").exists()


# --- dataset_dir and load_dataset --------------------------------------------------------------
def idx_gz(array: np.ndarray) -> bytes:
    header = (0x800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_server(server, monkeypatch, tmp_path):
    """The server holds a tiny MNIST (6 train, 4 test images of 28x28); SIAMNET_DATA and
    SIAMNET_URL_MNIST point at a temporary cache and the server, and the checksum table holds
    the served files' sums."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.array([0, 1, 2, 0, 1, 2]),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.array([3, 1, 3, 1]),
    }
    server.files.update({name: idx_gz(a) for name, a in arrays.items()})
    monkeypatch.setitem(
        fetch.CHECKSUMS, "mnist", {name: sha256(body) for name, body in server.files.items()}
    )
    monkeypatch.setenv("SIAMNET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SIAMNET_URL_MNIST", server.url.rstrip("/"))
    return arrays


def test_load_dataset_mnist_downloads_once_then_works_offline(server, mnist_server, tmp_path):
    first = load_dataset("mnist")
    assert first.name == "mnist" and list(first.splits) == ["train", "test"]
    assert torch.equal(
        first.train.images[:, 0],
        torch.from_numpy(mnist_server["train-images-idx3-ubyte.gz"]).byte(),
    )
    assert first.test.classes == ["1", "3"] and first.test.labels.tolist() == [1, 0, 1, 0]
    cached = tmp_path / "data" / "mnist"
    assert leftovers(cached) == sorted(mnist_server)
    server.stop()
    again = load_dataset("mnist")
    assert torch.equal(again.train.images, first.train.images)
    assert len(server.requests) == 4


def test_partial_cache_downloads_only_what_is_missing(server, mnist_server, tmp_path):
    cached = tmp_path / "data" / "mnist"
    cached.mkdir(parents=True)
    raw = gzip.decompress(server.files["train-images-idx3-ubyte.gz"])
    (cached / "train-images-idx3-ubyte").write_bytes(raw)  # put there by hand, uncompressed
    assert dataset_dir("mnist") == cached
    assert sorted(server.requests) == [
        "/t10k-images-idx3-ubyte.gz",
        "/t10k-labels-idx1-ubyte.gz",
        "/train-labels-idx1-ubyte.gz",
    ]


def test_load_dataset_omniglot_from_zips(server, monkeypatch, tmp_path):
    zips = {
        "images_background.zip": omniglot_zip("images_background", ["Greek", "Latin"]),
        "images_evaluation.zip": omniglot_zip("images_evaluation", ["Tengwar"]),
    }
    server.files.update(zips)
    monkeypatch.setitem(fetch.CHECKSUMS, "omniglot", {n: sha256(b) for n, b in zips.items()})
    monkeypatch.setenv("SIAMNET_DATA", str(tmp_path))
    monkeypatch.setenv("SIAMNET_URL_OMNIGLOT", server.url)
    dataset = load_dataset("omniglot")
    assert list(dataset.splits) == ["background", "evaluation"]
    assert dataset.train.groups == ["Greek", "Greek", "Latin", "Latin"]
    assert dataset.test.classes == ["Tengwar/character01", "Tengwar/character02"]
    assert dataset.train.images[dataset.train.labels == 3].unique().tolist() == [11]


def test_local_folder_comes_before_the_cache(monkeypatch, tmp_path):
    local = tmp_path / "system"
    local.mkdir()
    for name in fetch.CHECKSUMS["mnist"]:
        (local / name).write_bytes(b"")
    monkeypatch.setitem(fetch.LOCAL_DIRS, "mnist", [tmp_path / "absent", local])
    monkeypatch.setenv("SIAMNET_URL_MNIST", f"http://127.0.0.1:{free_port()}/")
    assert dataset_dir("mnist") == local


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SIAMNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("omniglot") == tmp_path / "xdg" / "siamnet" / "omniglot"
    monkeypatch.setenv("SIAMNET_DATA", str(tmp_path / "mine"))
    assert cache_dir("mnist") == tmp_path / "mine" / "mnist"
    with pytest.raises(DataError, match=r"cifar: not a data set that can be fetched"):
        dataset_dir("cifar")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist package is not installed",
)
def test_debian_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.setenv("SIAMNET_DATA", str(tmp_path))  # the cache must not be needed
    dataset = load_dataset("fashion-mnist")
    assert len(dataset.train) == 60_000 and len(dataset.test) == 10_000
    assert dataset.train.image_size == (28, 28) and dataset.train.classes[0] == "T-shirt/top"
    assert leftovers(tmp_path) == []
