"""Micro-batching and the batch endpoints: answers of requests embedded together equal the
answers of the same requests one at a time (and the Python API's), under concurrent clients on
a real `siamnet serve` subprocess; /embed, several images to /classify and /search; query
parameters by the command line's names, unknown ones refused; the batcher itself in-process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import siamnet
from siamnet.checkpoint import load_checkpoint
from siamnet.gallery import checkpoint_identity, load_gallery
from siamnet.images import read_images, read_support_folder
from siamnet.infer import build_support
from siamnet.serve.batching import MicroBatcher
from siamnet.serve.service import MAX_IMAGES

from service_process import Service, ShapeFiles, assert_same_answer

HTTP = httpx.Client(timeout=60)

#: Relative tolerance of embeddings made in a batch against embeddings made one at a time.
REL = 1e-5

#: Tolerance of scores of several queries scored at once against one query's: distances come
#: from one matrix product of all queries (|q|^2 + |s|^2 - 2 q.s, as in the Python API), whose
#: rounding, about 1e-7 of the squared norms, is larger than that for near neighbours.
SCORES_REL = 1e-4


def files_of(paths: list[Path], field: str = "images") -> list[tuple[str, Any]]:
    return [(field, (p.name, p.read_bytes(), "image/png")) for p in paths]


@pytest.fixture(scope="module")
def batching_service(shape_files: ShapeFiles) -> Iterator[Service]:
    """The service with a long batching window, so that concurrent requests share calls."""
    args = [str(shape_files.checkpoint), "--support", "support", "--gallery", "gallery"]
    args += ["--batch-window-ms", "20", "--max-batch", "16", "--device", "cpu"]
    svc = Service(args, cwd=shape_files.root)
    yield svc
    assert svc.stop() == 130, "".join(svc.log)
    assert "Traceback" not in "".join(svc.log)


def test_batched_answers_equal_one_at_a_time_answers_under_concurrent_clients(
    batching_service: Service, shape_files: ShapeFiles
) -> None:
    url = batching_service.url
    q = shape_files.queries
    names = sorted(q)
    jobs: list[tuple[str, list[tuple[str, Any]], dict[str, Any]]] = []
    jobs += [("embed", files_of([q[n]]), {}) for n in names]
    jobs += [("classify", files_of([q[n]], "image"), {}) for n in names]
    jobs += [("search", files_of([q[n]], "image"), {"top_k": 4}) for n in names]
    jobs += [
        ("compare", [("a", (a, q[a].read_bytes())), ("b", (b, q[b].read_bytes()))], {})
        for a, b in zip(names, names[::-1], strict=True)
    ]

    def ask(job: int) -> dict[str, Any]:
        path, files, params = jobs[job]
        answer = HTTP.post(url + path, files=files, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    alone = [ask(j) for j in range(len(jobs))]  # one request at a time: each call its own
    before = HTTP.get(url + "info").json()
    order = [i % len(jobs) for i in range(4 * len(jobs))]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(ask, order))
    after = HTTP.get(url + "info").json()
    assert_same_answer(together, [alone[j] for j in order], REL)
    calls = after["model_calls"] - before["model_calls"]
    images = after["embedded_images"] - before["embedded_images"]
    requests_images = sum(2 if jobs[j][0] == "compare" else 1 for j in order)
    assert images == requests_images
    assert calls < len(order)  # requests shared model calls

    # and one at a time equals the library: the model on each image alone
    ckpt = load_checkpoint(shape_files.checkpoint)
    for n, answer in zip(names, alone, strict=False):
        expected = siamnet.embed(ckpt, [q[n]])
        assert answer["embeddings"] == expected.tolist()


def test_embed_gives_the_library_embeddings_and_the_model_identity(
    service: Service, shape_files: ShapeFiles
) -> None:
    paths = [shape_files.queries[n] for n in ("bar0", "ring1", "box0")]
    answer = HTTP.post(service.url + "embed", files=files_of(paths))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    ckpt = load_checkpoint(shape_files.checkpoint)
    expected = siamnet.embed(ckpt, paths)  # the Python API, all three at once
    assert torch.allclose(torch.tensor(body["embeddings"]), expected, rtol=REL, atol=REL)
    assert body["model"] == {
        "checkpoint": "model.pt",
        "sha256": checkpoint_identity(ckpt),
        "model": ckpt.spec.model,
        "head": ckpt.spec.head,
        "dim": expected.shape[1],
    }
    assert body["model"]["sha256"] == load_gallery(shape_files.gallery).checkpoint["sha256"]


def test_classify_and_search_take_several_images_as_the_python_api_does(
    service: Service, shape_files: ShapeFiles
) -> None:
    paths = [shape_files.queries[n] for n in ("bar1", "cross0", "ring0", "box1", "bar0")]
    many = HTTP.post(service.url + "classify", files=files_of(paths), params={"reject_below": -9})
    assert many.status_code == 200, many.text
    body = many.json()
    assert body["reject_below"] == -9 and len(body["results"]) == len(paths)
    for path, result in zip(paths, body["results"], strict=True):
        single = HTTP.post(
            service.url + "classify", files=files_of([path], "image"), params={"reject_below": -9}
        ).json()
        assert_same_answer(result, single, SCORES_REL)
    ckpt = load_checkpoint(shape_files.checkpoint)
    images, labels, classes, support_paths, _ = read_support_folder(
        shape_files.support, 1, (28, 28)
    )
    support = build_support(ckpt, images, labels, classes, support_paths)
    queries = read_images(paths, 1, (28, 28))[0]
    predictions = siamnet.classify(ckpt, support, queries, reject_below=-9)  # [Q] at once
    assert [r["label"] for r in body["results"]] == [p.label for p in predictions]
    assert [r["label"] for r in body["results"]] == ["bar", "cross", "ring", "box", "bar"]

    found = HTTP.post(service.url + "search", files=files_of(paths), params={"top_k": 3})
    assert found.status_code == 200, found.text
    answer = found.json()
    assert answer["top_k"] == answer["k"] == 3 and len(answer["results"]) == len(paths)
    gallery = load_gallery(shape_files.gallery)
    indices, _ = siamnet.search(gallery, siamnet.embed(ckpt, queries), 3, head=ckpt.model.head)
    for path, result, row in zip(paths, answer["results"], indices.tolist(), strict=True):
        single = HTTP.post(
            service.url + "search", files=files_of([path], "image"), params={"top_k": 3}
        ).json()
        assert_same_answer(result["matches"], single["matches"], SCORES_REL)
        assert [m["index"] for m in result["matches"]] == row


def test_query_parameters_have_the_command_line_names_and_unknown_ones_are_refused(
    service: Service, shape_files: ShapeFiles
) -> None:
    one = files_of([shape_files.queries["ring0"]], "image")
    for params in ({"top_k": 3}, {"k": 3}, {"top_k": 3, "k": 3}):
        body = HTTP.post(service.url + "search", files=one, params=params).json()
        assert len(body["matches"]) == body["top_k"] == 3, params
    refusals = [
        ("search", {"topk": 3}, "unknown query parameter 'topk': /search takes k, top_k"),
        ("search", {"top_k": 3, "k": 4}, "query parameters top_k 3 and k 4: give only top_k"),
        ("classify", {"reject-below": 1}, "unknown query parameter 'reject-below': /classify"),
        ("embed", {"top_k": 1}, "unknown query parameter 'top_k': /embed takes none"),
        ("compare", {"threshold": 1}, "unknown query parameter 'threshold': /compare takes none"),
    ]
    for path, params, message in refusals:
        files = files_of([shape_files.queries["ring0"]], "image" if path != "embed" else "images")
        if path == "compare":
            files = [("a", ("a.png", b"x")), ("b", ("b.png", b"x"))]
        answer = HTTP.post(service.url + path, files=files, params=params)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["detail"].startswith(message), answer.text


def test_batch_requests_are_refused_in_one_line_naming_the_field(
    service: Service, shape_files: ShapeFiles
) -> None:
    good = shape_files.queries["bar0"]
    both = files_of([good], "image") + files_of([good])
    tiny = [("images", (f"{i}.png", good.read_bytes())) for i in range(MAX_IMAGES + 1)]
    cases = [
        ("classify", both, "send either field 'image' (one image file) or field 'images'"),
        ("search", [], "send either field 'image'"),
        ("embed", tiny, f"field 'images': {MAX_IMAGES + 1} files; at most {MAX_IMAGES}"),
        ("embed", [], "missing field 'images'"),
        ("embed", files_of([good, shape_files.not_image]), "field 'images[1]' (notes.png): not"),
    ]
    for path, files, message in cases:
        answer = HTTP.post(service.url + path, files=files or None, data={} if files else None)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["detail"].startswith(message), answer.text


def test_the_batcher_gives_each_request_its_own_rows_within_the_batch_size() -> None:
    sizes: list[int] = []

    def model_call(images: torch.Tensor) -> torch.Tensor:
        sizes.append(len(images))
        return images.flatten(1).float() * 2

    batcher = MicroBatcher(model_call, window=0.05, max_batch=8)
    start = threading.Barrier(24)

    def ask(i: int) -> bool:
        images = torch.full((1 + i % 3, 1, 2, 2), i, dtype=torch.uint8)
        with batcher.arriving() as run:
            start.wait(timeout=30)
            rows = run(images)
        return torch.equal(rows, images.flatten(1).float() * 2)

    with ThreadPoolExecutor(max_workers=24) as pool:
        assert all(pool.map(ask, range(24)))
    assert sum(sizes) == sum(1 + i % 3 for i in range(24))
    assert max(sizes) <= 8 and len(sizes) < 24  # batched, never past max_batch
    big = torch.zeros(20, 1, 2, 2, dtype=torch.uint8)
    assert batcher.run(big).shape == (20, 4) and sizes[-1] == 20  # alone, never split
    assert batcher.waiting() == 0 and batcher.calls == len(sizes)


def test_a_model_error_reaches_every_request_of_its_batch() -> None:
    def model_call(images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(f"no memory for {len(images)} images")

    batcher = MicroBatcher(model_call, window=0.0, max_batch=4)
    with pytest.raises(RuntimeError, match="no memory for 2 images"):
        batcher.run(torch.zeros(2, 1, 2, 2, dtype=torch.uint8))
    assert batcher.waiting() == 0
