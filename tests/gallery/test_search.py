"""Search: exact search, rerank and FAISS against brute force, on random and on trained heads;
top-k checks; an l1 gallery needs the model's head."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

from siamnet.errors import ArgumentError
from siamnet.evaluate import embed_images
from siamnet.gallery import (
    ExactSearch,
    FaissSearch,
    Gallery,
    RerankSearch,
    build_gallery,
    search,
    search_matches,
    shown_name,
)
from siamnet.models.heads import CosineHead, DistanceHead, L1Head

from shapes_model import shape_set

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed (faiss extra)")


def brute_force(head, gallery: torch.Tensor, queries: torch.Tensor, k: int):
    """Every (query, item) pair scored by the head's own forward, in float64."""
    h = copy.deepcopy(head).double()
    q, g = queries.double(), gallery.double()
    raw = h(q[:, None, :].expand(-1, len(g), -1), g[None].expand(len(q), -1, -1))
    top = h.to_score(raw).topk(k, dim=1)
    return top.indices, top.values


def l1_head(dim: int, sign: str, seed: int = 0) -> L1Head:
    torch.manual_seed(seed)
    head = L1Head(dim)
    with torch.no_grad():
        w = head.fc.weight
        if sign == "negative":
            w.copy_(-w.abs())
        head.fc.bias.fill_(2.0)
    return head


def random_gallery(n: int = 3000, dim: int = 84, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(20, dim, generator=g)


@pytest.mark.parametrize(
    "head", [DistanceHead(), CosineHead(), l1_head(84, "mixed"), l1_head(84, "negative")]
)
def test_exact_search_equals_brute_force(head):
    items, queries = random_gallery()
    indices, scores = ExactSearch(items, head, block=20_000).search(queries, 7)  # several chunks
    want_indices, want_scores = brute_force(head, items, queries, 7)
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-4, atol=1e-4)


def test_exact_search_on_a_trained_l1_head_equals_brute_force(bce_ckpt):
    head = bce_ckpt.model.head
    assert bool((head.fc.weight > 0).any()) and bool((head.fc.weight < 0).any())
    items, queries = random_gallery(dim=head.fc.in_features, seed=1)
    gallery = Gallery(items, [None] * len(items), ["x"] * len(items), "l1", {"sha256": ""})
    indices, scores = search(gallery, queries, top_k=10, head=head)
    want_indices, want_scores = brute_force(head, items, queries, 10)
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-6)


def test_rerank_is_exact_when_no_weight_is_positive():
    head = l1_head(84, "negative", seed=2)
    items, queries = random_gallery(seed=2)
    indices, _ = RerankSearch(items, head, pool_factor=1, min_pool=1).search(queries, 5)
    assert torch.equal(indices, brute_force(head, items, queries, 5)[0])


def test_rerank_scores_its_candidates_by_the_head():
    head = l1_head(84, "mixed", seed=3)
    items, queries = random_gallery(seed=3)
    indices, scores = RerankSearch(items, head, min_pool=50).search(queries, 5)
    want = torch.sigmoid(head(queries[:, None, :].expand(-1, 5, -1), items[indices]))
    torch.testing.assert_close(scores, want, rtol=1e-5, atol=1e-6)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    full, _ = RerankSearch(items, head, min_pool=len(items)).search(queries, 5)
    assert torch.equal(full, brute_force(head, items, queries, 5)[0])  # a pool of everything


def test_rerank_needs_an_l1_head():
    with pytest.raises(ArgumentError, match="l1 head"):
        RerankSearch(torch.zeros(3, 4), DistanceHead())


@needs_faiss
@pytest.mark.parametrize("head", [DistanceHead(), CosineHead(), l1_head(84, "negative", seed=4)])
def test_faiss_flat_equals_brute_force(head):
    items, queries = random_gallery(seed=4)
    indices, scores = FaissSearch(items, head, "flat").search(queries, 5)
    want_indices, want_scores = brute_force(head, items, queries, 5)
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-4, atol=1e-4)


@needs_faiss
def test_faiss_ivf_visiting_every_cell_is_exact():
    items, queries = random_gallery(seed=5)
    searcher = FaissSearch(items, DistanceHead(), "ivf", nlist=16, nprobe=16)
    indices, _ = searcher.search(queries, 5)
    assert torch.equal(indices, brute_force(DistanceHead(), items, queries, 5)[0])


def test_top_k_is_clamped_and_checked():
    items, queries = random_gallery(n=4)
    indices, scores = ExactSearch(items, DistanceHead()).search(queries, 10)
    assert indices.shape == scores.shape == (20, 4)
    with pytest.raises(ArgumentError, match="top-k"):
        ExactSearch(items, DistanceHead()).search(queries, 0)


def test_l1_gallery_search_needs_the_head(bce_ckpt, tmp_path):
    images, _ = shape_set(1, seed=171)
    gallery = build_gallery(bce_ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    q = embed_images(bce_ckpt.model, images)
    with pytest.raises(ArgumentError, match="needs the model's head"):
        search(gallery, q)
    head = bce_ckpt.model.head
    indices, scores = search(gallery, q, top_k=2, head=head)
    want_indices, want_scores = brute_force(head, gallery.embeddings, q, 2)
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-6)


@needs_faiss
def test_an_ivf_search_visiting_no_cell_is_refused():
    items, _ = random_gallery(n=200, seed=6)
    with pytest.raises(ArgumentError, match="--nprobe 0: expected at least 1"):
        FaissSearch(items, DistanceHead(), "ivf", nlist=4, nprobe=0)


# --- the matches sent out --------------------------------------------------------------------


def small_gallery(labels, files) -> Gallery:
    return Gallery(torch.zeros(len(files), 2), labels, files, "euclidean", {})


def test_search_matches_skip_empty_places_and_mark_same():
    gallery = small_gallery(["bar", None, "ring"], ["/data/a.png", "/data/sub/b.png", "c.png"])
    matches = search_matches(gallery, [2, -1, 1], [-0.1, float("-inf"), -0.7], threshold=-0.5)
    assert [(m["rank"], m["index"], m["file"], m["label"]) for m in matches] == [
        (1, 2, "c.png", "ring"),
        (3, 1, "/data/sub/b.png", None),
    ]
    assert [(m["score"], m["same"]) for m in matches] == [(-0.1, True), (-0.7, False)]
    unjudged = search_matches(gallery, [0], [float("nan")])
    assert unjudged[0]["score"] is None and unjudged[0]["same"] is None


def test_names_sent_out_are_utf8_text():
    bad = os.fsdecode(b"b\xffr")
    assert shown_name(bad) == "b\\xffr" and shown_name("café/ok") == "café/ok"
    assert shown_name("\ud800") == "\\ud800"  # a lone surrogate read from JSON
    gallery = small_gallery([bad], [f"/data/{bad}/{bad}.png"])
    (public,) = search_matches(gallery, [0], [0.5], 0.0, public=True)
    assert (public["file"], public["label"]) == ("b\\xffr.png", "b\\xffr")
    json.dumps(public, ensure_ascii=False).encode("utf-8")  # no surrogates left
    (local,) = search_matches(gallery, [0], [0.5], 0.0)
    assert local["file"] == f"/data/{bad}/{bad}.png"  # the path as it is, to open it
