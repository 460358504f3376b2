"""Galleries: build, add, load, refuse, and search that equals brute force for every head."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, update_metadata
from siamnet.errors import ArgumentError, CheckpointError, DataError
from siamnet.evaluate import embed_images
from siamnet.gallery import (
    ExactSearch,
    FaissSearch,
    Gallery,
    RerankSearch,
    add_to_gallery,
    build_gallery,
    checkpoint_identity,
    load_gallery,
    read_gallery_items,
    search,
)
from siamnet.models.heads import CosineHead, DistanceHead, L1Head

from shapes_model import SHAPES, draw_shapes, shape_set, write_checkpoint, write_shape_folder

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed (faiss extra)")


@pytest.fixture(scope="session")
def ckpt_path(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("gallery-ckpt") / "shapes.pt", "contrastive")


@pytest.fixture(scope="session")
def ckpt(ckpt_path):
    return load_checkpoint(ckpt_path)


@pytest.fixture(scope="session")
def bce_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("gallery-bce") / "shapes.pt"
    return load_checkpoint(write_checkpoint(path, "bce"))


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


def test_build_load_and_search_real_images(ckpt, tmp_path):
    images, labels = shape_set(5, seed=101)
    names = [f"img{i}.png" for i in range(len(images))]
    built = build_gallery(ckpt, images, [SHAPES[i] for i in labels], names, tmp_path / "g")
    info = json.loads((tmp_path / "g" / "gallery.json").read_text())
    assert info["count"] == 20 and info["head"] == "euclidean" and info["dim"] == 84
    assert info["checkpoint"]["sha256"] == checkpoint_identity(ckpt)
    raw = torch.load(tmp_path / "g" / "embeddings.pt", weights_only=True)
    assert set(raw) == {"embeddings"} and raw["embeddings"].shape == (20, 84)
    loaded = load_gallery(tmp_path / "g")
    assert torch.equal(loaded.embeddings, built.embeddings) and loaded.files == names
    queries, truth = shape_set(3, seed=102)
    indices, _ = search(loaded, embed_images(ckpt.model, queries), top_k=3)
    top_labels = [loaded.labels[i] for i in indices[:, 0].tolist()]
    assert top_labels == [SHAPES[t] for t in truth.tolist()]


def test_add_embeds_only_the_new_images(ckpt, tmp_path):
    images, labels = shape_set(3, seed=111)
    build_gallery(ckpt, images, [None] * 12, [f"a{i}" for i in range(12)], tmp_path / "g")
    model = copy.deepcopy(ckpt.model)
    seen = []
    original = model.embed
    model.embed = lambda x: seen.append(len(x)) or original(x)
    fresh = ckpt.__class__(model, ckpt.metadata, None, ckpt.path)
    new_images = draw_shapes(torch.tensor([0, 1, 2]), seed=112)
    merged = add_to_gallery(
        tmp_path / "g", fresh, new_images, ["bar", "cross", "ring"], list("xyz")
    )
    assert sum(seen) == 3
    reloaded = load_gallery(tmp_path / "g")
    assert len(reloaded) == len(merged) == 15
    assert reloaded.labels[-3:] == ["bar", "cross", "ring"] and reloaded.files[-3:] == list("xyz")
    torch.testing.assert_close(reloaded.embeddings[-3:], embed_images(ckpt.model, new_images))


def test_a_different_checkpoint_is_refused_naming_both(ckpt, bce_ckpt, tmp_path):
    images, _ = shape_set(1, seed=121)
    build_gallery(ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    with pytest.raises(CheckpointError) as err:
        add_to_gallery(tmp_path / "g", bce_ckpt, images, [None] * 4, list("efgh"))
    message = str(err.value)
    assert str(ckpt.path.resolve()) in message and str(bce_ckpt.path) in message
    assert len(load_gallery(tmp_path / "g")) == 4  # untouched


def test_identity_ignores_metadata_but_not_weights(ckpt, tmp_path):
    copy_path = tmp_path / "copy.pt"
    copy_path.write_bytes(ckpt.path.read_bytes())
    update_metadata(copy_path, {"threshold": 0.123})
    assert checkpoint_identity(load_checkpoint(copy_path)) == checkpoint_identity(ckpt)
    changed = load_checkpoint(copy_path)
    with torch.no_grad():
        next(changed.model.parameters()).view(-1)[0] += 1e-3
    assert checkpoint_identity(changed) != checkpoint_identity(ckpt)


def test_building_over_a_gallery_is_refused_without_overwrite(ckpt, tmp_path):
    images, _ = shape_set(1, seed=131)
    build_gallery(ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    with pytest.raises(DataError, match="already there"):
        build_gallery(ckpt, images[:2], [None] * 2, list("ab"), tmp_path / "g")
    assert len(load_gallery(tmp_path / "g")) == 4
    build_gallery(ckpt, images[:2], [None] * 2, list("ab"), tmp_path / "g", overwrite=True)
    assert len(load_gallery(tmp_path / "g")) == 2


def test_an_interrupted_add_leaves_the_gallery_as_it_was(ckpt, tmp_path):
    """embeddings.pt is written before gallery.json; rows past the recorded count are ignored."""
    images, _ = shape_set(1, seed=141)
    built = build_gallery(ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    longer = torch.cat([built.embeddings, torch.randn(3, built.dim)])
    torch.save({"embeddings": longer}, tmp_path / "g" / "embeddings.pt")
    loaded = load_gallery(tmp_path / "g")
    assert len(loaded) == 4 and torch.equal(loaded.embeddings, built.embeddings)


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_damaged_galleries_are_refused(ckpt, tmp_path):
    images, _ = shape_set(1, seed=151)
    build_gallery(ckpt, images, [None] * 4, list("abcd"), tmp_path / "g")
    g = tmp_path / "g"
    marker = tmp_path / "marker"
    (g / "embeddings.pt").write_bytes(pickle.dumps({"embeddings": _Marker(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="damaged gallery embeddings"):
        load_gallery(g)
    assert not marker.exists()
    (g / "embeddings.pt").unlink()
    with pytest.raises(CheckpointError, match="embeddings.pt is missing"):
        load_gallery(g)
    (g / "gallery.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_gallery(g)
    with pytest.raises(CheckpointError, match="no gallery.json"):
        load_gallery(tmp_path)
    (g / "gallery.json").write_text(json.dumps({"format": "siamnet-gallery", "count": 9}))
    torch.save({"embeddings": torch.zeros(9, 2)}, g / "embeddings.pt")
    with pytest.raises(CheckpointError, match="damaged gallery: 9 items"):
        load_gallery(g)


def test_read_gallery_items_from_folders_and_files(tmp_path):
    root = write_shape_folder(tmp_path / "data", per_class=2, seed=161)
    (root / "loose.png").write_bytes((root / "bar" / "0.png").read_bytes())
    (root / "ring" / "broken.png").write_text("not an image")
    items = read_gallery_items(root, 1, (28, 28))
    assert len(items.names) == 9 and items.images.shape == (9, 1, 28, 28)
    assert items.labels.count(None) == 1 and items.labels.count("ring") == 2
    assert len(items.failures) == 1 and "broken.png" in items.failures[0][1]
    single = read_gallery_items(root / "loose.png", 1, (28, 28), invert=True)
    loose = items.names.index(str(root / "loose.png"))
    assert items.labels[loose] is None
    assert single.labels == [None] and torch.equal(single.images[0], 255 - items.images[loose])


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


def test_read_gallery_items_from_a_data_spec():
    registry = pytest.importorskip("siamnet.data.registry", reason="data registry not available")
    dataset = registry.load_dataset("digits", image_size=(28, 28))
    splits = {name: data for name, data in dataset.splits.items() if data is not None}
    items = read_gallery_items("digits", 1, (28, 28))
    assert len(items.names) == sum(len(d) for d in splits.values()) == len(items.images)
    first_split, first = next(iter(splits.items()))
    assert items.names[0] == f"digits:{first_split}:0"
    assert items.labels[0] == first.classes[int(first.labels[0])]
    only = read_gallery_items("digits", 1, (28, 28), split=first_split)
    assert len(only.names) == len(first)
    with pytest.raises(DataError, match="no split named 'nope'"):
        read_gallery_items("digits", 1, (28, 28), split="nope")
