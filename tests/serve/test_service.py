"""The HTTP service as a real `siamnet serve` subprocess, exercised with a real HTTP client:
each endpoint, bad uploads, the upload cap, the Host check, concurrent requests, and start-up
errors."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from siamnet.checkpoint import load_checkpoint
from siamnet.errors import DataError
from siamnet.images import read_image
from siamnet.infer import compare
from siamnet.serve.service import ModelService

from service_process import (
    MAX_UPLOAD_BYTES,
    SHAPES,
    SIAMNET,
    Service,
    ShapeFiles,
    assert_same_answer,
    first_support_image,
)


def upload(path: Path, name: str | None = None) -> tuple[str, bytes, str]:
    return (name or path.name, path.read_bytes(), "image/png")


#: One client for every request of these tests (it is safe to share between threads).
HTTP = httpx.Client(timeout=30)


def post(url: str, files: dict[str, Any], **params: Any) -> httpx.Response:
    return HTTP.post(url, files=files, params=params)


# --- endpoints -------------------------------------------------------------------------------


def test_health_and_info(service: Service, shape_files: ShapeFiles) -> None:
    assert service.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    assert HTTP.get(service.url + "health").json() == {"status": "ok"}
    info = HTTP.get(service.url + "info").json()
    ckpt = load_checkpoint(shape_files.checkpoint)
    assert info["checkpoint"] == "model.pt"
    assert (info["model"], info["head"]) == (ckpt.spec.model, ckpt.spec.head)
    assert info["classes"] == list(SHAPES)
    assert info["threshold"] == pytest.approx(ckpt.threshold)
    assert info["version"] == info["checkpoint_version"] == "0.1.0"
    assert info["support"] == {
        "classes": sorted(SHAPES),
        "images": 12,
        "scoring": "mean",
        "skipped": 0,
    }
    assert info["gallery"]["items"] == info["gallery"]["labelled"] == 16
    assert info["max_upload_bytes"] == MAX_UPLOAD_BYTES


def test_compare_says_same_and_different_as_the_library(
    service: Service, shape_files: ShapeFiles
) -> None:
    q = shape_files.queries
    ckpt = load_checkpoint(shape_files.checkpoint)
    for a, b, same in [("bar0", "bar1", True), ("bar0", "ring0", False), ("cross0", "box1", False)]:
        answer = post(service.url + "compare", {"a": upload(q[a]), "b": upload(q[b])})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        expected = compare(ckpt, read_image(q[a], 1, (28, 28)), read_image(q[b], 1, (28, 28)))
        assert body["same"] is same
        assert body["score"] == pytest.approx(expected.score, rel=1e-5, abs=1e-6)
        assert body["threshold"] == pytest.approx(ckpt.threshold)
        assert body["head"] == ckpt.spec.head


def test_classify_ranks_every_support_class_with_an_image(
    service: Service, shape_files: ShapeFiles
) -> None:
    for shape in SHAPES:
        answer = post(service.url + "classify", {"image": upload(shape_files.queries[f"{shape}0"])})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] == body["best"] == shape
        assert body["unknown"] is False
        ranking = body["ranking"]
        assert [r["name"] for r in ranking][0] == shape
        assert sorted(r["name"] for r in ranking) == sorted(SHAPES)
        scores = [r["score"] for r in ranking]
        assert scores == sorted(scores, reverse=True)
        assert (body["runner_up"], body["runner_up_score"]) == (ranking[1]["name"], scores[1])
    for row in ranking:
        png = HTTP.get(service.url + row["image_url"].lstrip("/"))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        shown = torch.from_numpy(np.array(Image.open(io.BytesIO(png.content))))
        assert torch.equal(shown, first_support_image(shape_files.support, row["name"]))


def test_classify_rejects_below_a_threshold(service: Service, shape_files: ShapeFiles) -> None:
    files = {"image": upload(shape_files.queries["ring1"])}
    best = post(service.url + "classify", files).json()["score"]
    body = post(service.url + "classify", files, reject_below=best + 1.0).json()
    assert body["unknown"] is True and body["label"] is None and body["best"] == "ring"


def test_search_returns_the_top_k_gallery_items(service: Service, shape_files: ShapeFiles) -> None:
    answer = post(service.url + "search", {"image": upload(shape_files.queries["cross1"])}, k=3)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["k"] == 3 and [m["rank"] for m in body["matches"]] == [1, 2, 3]
    assert all(m["label"] == "cross" and m["same"] is True for m in body["matches"])
    assert all(m["file"].startswith("cross_") for m in body["matches"])
    scores = [m["score"] for m in body["matches"]]
    assert scores == sorted(scores, reverse=True)
    many = post(service.url + "search", {"image": upload(shape_files.queries["cross1"])}, k=50)
    assert len(many.json()["matches"]) == 16  # the whole gallery, no more


def test_openapi_description_and_docs(service: Service) -> None:
    spec = HTTP.get(service.url + "openapi.json").json()
    for path in ("/compare", "/embed", "/classify", "/search", "/health", "/info"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/compare"]["post"]["requestBody"]["content"]
    parameters = {
        path: sorted(p["name"] for p in spec["paths"][path]["post"].get("parameters", []))
        for path in ("/compare", "/embed", "/classify", "/search")
    }
    assert parameters == {
        "/compare": [],
        "/embed": [],
        "/classify": ["reject_below"],
        "/search": ["k", "top_k"],
    }
    for path, fields in [("/embed", {"images"}), ("/classify", {"image", "images"})]:
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        ref = body["schema"]["$ref"].rsplit("/", 1)[1]
        assert set(spec["components"]["schemas"][ref]["properties"]) == fields
    search_answer = spec["paths"]["/search"]["post"]["responses"]["200"]["content"]
    assert "results" in json.dumps(spec["components"]["schemas"]["SearchManyAnswer"])
    assert "SearchManyAnswer" in json.dumps(search_answer)
    docs = HTTP.get(service.url + "docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_page_and_its_files_are_served(service: Service) -> None:
    page = HTTP.get(service.url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="pad"' in page.text and 'id="file-a"' in page.text
    for name in ("app.js", "style.css"):
        assert HTTP.get(service.url + "static/" + name).status_code == 200


def test_a_large_real_image_is_read_and_resized(service: Service, shape_files: ShapeFiles) -> None:
    files = {"a": upload(shape_files.medium_noise), "b": upload(shape_files.queries["bar0"])}
    answer = post(service.url + "compare", files)
    assert answer.status_code == 200, answer.text


# --- bad input -------------------------------------------------------------------------------


def test_bad_uploads_get_400_with_a_clear_message(
    service: Service, shape_files: ShapeFiles
) -> None:
    good = upload(shape_files.queries["bar0"])
    cases = [
        ({"a": upload(shape_files.not_image), "b": good}, "field 'a' (notes.png): not a readable"),
        ({"a": good, "b": upload(shape_files.empty)}, "field 'b' (empty.png): empty"),
        ({"a": good}, "missing field 'b'"),
        ({"a": good, "b": (None, b"text", None)}, "field 'b': expected an uploaded image file"),
    ]
    for files, message in cases:
        answer = post(service.url + "compare", files)
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"].startswith(message), answer.text
    answer = HTTP.post(service.url + "compare", json={"a": 1, "b": 2})
    assert answer.status_code == 400 and "missing field 'a'" in answer.json()["detail"]
    answer = post(service.url + "search", {"image": good}, k=0)
    assert answer.status_code == 400 and "query parameter 'k'" in answer.json()["detail"]
    answer = post(service.url + "classify", {"image": good}, reject_below="nan")
    assert answer.status_code == 400 and "reject_below" in answer.json()["detail"]
    answer = HTTP.get(service.url + "support/99/image")
    assert answer.status_code == 404 and "support class 99" in answer.json()["detail"]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def damaged_files(root: Path, good_png: bytes) -> list[tuple[Path, str]]:
    """Files no upload may be decoded from, with what the error must say about each."""
    eps = root / "figure.eps"  # a refused format, and damaged: the PostScript stops short
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n%%EndComments\n/x ")
    truncated = root / "truncated.png"
    truncated.write_bytes(good_png[: len(good_png) // 2])
    huge = root / "huge.png"  # a valid header declaring 8000 x 8000 pixels, and no pixels
    header = struct.pack(">IIBBBBB", 8000, 8000, 8, 0, 0, 0, 0)
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b""))
    garbled = root / "garbled.png"  # the right header, then bytes that are not compressed data
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
    idat = png_chunk(b"IDAT", bytes(range(256)) * 4)
    garbled.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b""))
    return [
        (eps, "field 'a' (figure.eps): "),
        (truncated, "field 'a' (truncated.png): not a readable image"),
        (huge, "field 'a' (huge.png): image of 8000x8000 pixels; at most 40 megapixels"),
        (garbled, "field 'a' (garbled.png): not a readable image"),
    ]


def test_damaged_or_refused_images_get_400_naming_the_field(
    service: Service, shape_files: ShapeFiles, tmp_path: Path
) -> None:
    good = shape_files.queries["bar0"]
    for path, message in damaged_files(tmp_path, good.read_bytes()):
        for endpoint, field in [("compare", "a"), ("classify", "image"), ("search", "image")]:
            files = {field: upload(path, path.name)}
            if endpoint == "compare":
                files["b"] = upload(good)
            answer = post(service.url + endpoint, files)
            assert answer.status_code == 400, (path.name, endpoint, answer.text)
            detail = answer.json()["detail"]
            assert detail.startswith(message.replace("'a'", f"'{field}'")), detail
            assert "\n" not in detail and "Traceback" not in detail
    assert HTTP.get(service.url + "health").status_code == 200


def test_any_decoder_failure_is_a_data_error_naming_the_upload(
    shape_files: ShapeFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    import siamnet.serve.service as service_module

    service = ModelService.load(shape_files.checkpoint)
    data = shape_files.queries["bar0"].read_bytes()
    assert service.decode(data, "field 'a'").shape == (1, 28, 28)

    def broken_decoder(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(service_module, "read_image_bytes", broken_decoder)
    with pytest.raises(DataError, match=r"^field 'a' \(x.tif\): not a readable image \(unpack"):
        service.decode(data, "field 'a' (x.tif)")


def test_uploads_over_the_cap_get_413(service: Service, shape_files: ShapeFiles) -> None:
    files = {"a": upload(shape_files.large_noise), "b": upload(shape_files.queries["bar0"])}
    answer = post(service.url + "compare", files)  # with Content-Length
    assert answer.status_code == 413
    assert f"at most {MAX_UPLOAD_BYTES} bytes" in answer.json()["detail"]

    request = httpx.Request("POST", service.url + "compare", files=files)
    body, content_type = request.read(), request.headers["content-type"]

    def chunks():  # no Content-Length: the cap is counted while reading
        for i in range(0, len(body), 64_000):
            yield body[i : i + 64_000]

    answer = HTTP.post(
        service.url + "compare", content=chunks(), headers={"content-type": content_type}
    )
    assert "content-length" not in {k.lower() for k in answer.request.headers}
    assert answer.status_code == 413
    assert HTTP.get(service.url + "health").status_code == 200


def test_classify_and_search_without_support_or_gallery_get_409(
    bare_service: Service, shape_files: ShapeFiles
) -> None:
    info = HTTP.get(bare_service.url + "info").json()
    assert info["support"] is None and info["gallery"] is None
    files = {"image": upload(shape_files.queries["bar0"])}
    for path, flag in [("classify", "--support DIR"), ("search", "--gallery DIR")]:
        answer = post(bare_service.url + path, files)
        assert answer.status_code == 409 and flag in answer.json()["detail"]
    assert HTTP.get(bare_service.url + "support/0/image").status_code == 409
    pair = {"a": files["image"], "b": upload(shape_files.queries["bar1"])}
    assert post(bare_service.url + "compare", pair).json()["same"] is True


# --- the Host check --------------------------------------------------------------------------


def test_only_loopback_host_names_are_answered_by_default(
    service: Service, shape_files: ShapeFiles
) -> None:
    port = service.url.rsplit(":", 1)[1].rstrip("/")
    for host in ["127.0.0.1", f"127.0.0.1:{port}", "localhost", "LocalHost.:80", "[::1]:9"]:
        answer = HTTP.get(service.url + "health", headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)
    refused = {
        f"rebind.example:{port}": (
            f"Host 'rebind.example:{port}' is not a name this service answers to; if clients "
            "reach it by that name, start it with --allowed-host rebind.example"
        ),
        "127.0.0.1.rebind.example": "Host '127.0.0.1.rebind.example' is not a name",
        "localhost.rebind.example:80": "Host 'localhost.rebind.example:80' is not a name",
        "::1": "Host header '::1': expected a host name or address",
        "localhost:http": "Host header 'localhost:http': expected a host name or address",
    }
    for host, message in refused.items():
        for path in ("health", "info", ""):
            answer = HTTP.get(service.url + path, headers={"Host": host})
            assert answer.status_code == 400, (host, path, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["detail"].startswith(message), answer.text
    files = {"a": upload(shape_files.queries["bar0"]), "b": upload(shape_files.queries["bar1"])}
    answer = HTTP.post(service.url + "compare", files=files, headers={"Host": "rebind.example"})
    assert answer.status_code == 400 and "--allowed-host rebind.example" in answer.text
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as raw:
        raw.sendall(b"GET /health HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
        status, body = read_until_closed(raw)
    assert status == 400 and body["detail"].startswith("missing Host header")


def read_until_closed(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the answer on a raw connection that the service closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_requests_get_the_single_request_answers(
    service: Service, shape_files: ShapeFiles
) -> None:
    q = shape_files.queries
    names = sorted(q)
    jobs = [
        ("compare", {"a": upload(q[a]), "b": upload(q[b])})
        for a, b in zip(names, names[1:], strict=False)
    ]
    jobs += [("classify", {"image": upload(q[n])}) for n in names[::2]]
    jobs += [("search", {"image": upload(q[n])}) for n in names[1::2]]

    def ask(job: int) -> tuple[int, dict[str, Any]]:
        path, files = jobs[job]
        answer = post(service.url + path, files)
        return answer.status_code, answer.json()

    alone = [ask(j) for j in range(len(jobs))]
    assert all(status == 200 for status, _ in alone)
    order = [i % len(jobs) for i in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(ask, order))
    assert len(together) == 200
    # the same answers, to float rounding: concurrent requests are embedded in one batch
    assert_same_answer(together, [alone[j] for j in order])


# --- start-up --------------------------------------------------------------------------------


def test_gallery_from_a_folder_of_images_matches_a_built_gallery(shape_files: ShapeFiles) -> None:
    built = ModelService.load(shape_files.checkpoint, gallery_dir=shape_files.gallery)
    folder = ModelService.load(shape_files.checkpoint, gallery_dir=shape_files.gallery_images)
    assert folder.gallery is not None and folder.gallery.source == "images"
    query = shape_files.queries["ring0"].read_bytes()
    a, b = built.search(query, 4), folder.search(query, 4)
    assert [m["label"] for m in a["matches"]] == [m["label"] for m in b["matches"]] == ["ring"] * 4
    assert [m["score"] for m in a["matches"]] == pytest.approx([m["score"] for m in b["matches"]])


def run_serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SIAMNET), "serve", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_start_up_errors_are_one_line(shape_files: ShapeFiles) -> None:
    missing = run_serve("nothing.pt", "--port", "0", cwd=shape_files.root)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "siamnet: error: nothing.pt: no such checkpoint file"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = run_serve("model.pt", "--port", port, cwd=shape_files.root)
    assert busy.returncode == 2
    assert busy.stderr.startswith(f"siamnet: error: --host 127.0.0.1 --port {port}: cannot listen")
    assert len(busy.stderr.strip().splitlines()) == 1
    bad_support = run_serve(
        "model.pt", "--support", "gallery_images/bar/0.png", "--port", "0", cwd=shape_files.root
    )
    assert bad_support.returncode == 2
    assert "gallery_images/bar/0.png: expected a folder" in bad_support.stderr
