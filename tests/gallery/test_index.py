"""A gallery's own FAISS index: saved with the gallery and read back untrained (same neighbours,
same vector count, no training or re-adding at load), searched by the gallery's own method;
damaged or mismatched index files refused in one line; adding appends to the trained index;
refusals of options that do not fit; adding skips what a gallery holds; the writers' lock."""

from __future__ import annotations

import hashlib
import json
import threading

import faiss
import pytest
import torch

from siamnet.errors import ArgumentError, CheckpointError, SiamnetError
from siamnet.evaluate import embed_images
from siamnet.gallery import (
    ExactSearch,
    Gallery,
    IndexSearch,
    IndexSpec,
    add_items_to_gallery,
    add_to_gallery,
    build_gallery,
    gallery_lock,
    load_gallery,
    make_searcher,
    save_gallery,
    with_index,
)
from siamnet.gallery.items import GalleryItems
from siamnet.gallery.lock import lock_path
from siamnet.models.heads import CosineHead, DistanceHead

from shapes_model import SHAPES, draw_shapes, shape_set

SPECS = {
    "flat": IndexSpec("flat"),
    "ivf-flat": IndexSpec("ivf-flat", nlist=8, nprobe=3),
    "ivf-pq": IndexSpec("ivf-pq", nlist=8, nprobe=3, m=8, nbits=6),
    "hnsw": IndexSpec("hnsw", hnsw_m=8, ef_construction=32, ef_search=16),
}


def vectors_gallery(n: int = 600, dim: int = 32, seed: int = 0, head: str = "euclidean"):
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(n, dim, generator=g)
    gallery = Gallery(items, [None] * n, [f"v{i}" for i in range(n)], head, {"sha256": "0" * 64})
    return gallery, torch.randn(25, dim, generator=g)


@pytest.mark.parametrize("method", list(SPECS))
@pytest.mark.parametrize("head", [DistanceHead(), CosineHead()])
def test_a_saved_index_loads_untrained_with_the_same_neighbours(
    method, head, tmp_path, monkeypatch
):
    gallery, queries = vectors_gallery(head=head.kind)
    indexed = with_index(gallery, head, SPECS[method])
    before = make_searcher(indexed, head).search(queries, 10)
    save_gallery(indexed, tmp_path / "g")
    assert (tmp_path / "g" / "index.faiss").is_file()
    info = json.loads((tmp_path / "g" / "gallery.json").read_text())
    raw = (tmp_path / "g" / "index.faiss").read_bytes()
    assert info["index"]["method"] == method
    assert info["index"]["sha256"] == hashlib.sha256(raw).hexdigest()

    trained = []
    every = (faiss.IndexIVFFlat, faiss.IndexIVFPQ, faiss.IndexHNSWFlat, faiss.IndexFlat)
    for cls in (*every, faiss.IndexFlatL2, faiss.IndexFlatIP):
        monkeypatch.setattr(cls, "train", lambda self, *a: trained.append(self))
        monkeypatch.setattr(cls, "add", lambda self, *a: trained.append(self))
    loaded = load_gallery(tmp_path / "g")
    searcher = make_searcher(loaded, head)
    after = searcher.search(queries, 10)
    assert not trained
    assert isinstance(searcher, IndexSearch) and loaded.method == method
    assert loaded.index.is_trained and loaded.index.ntotal == len(gallery)
    assert torch.equal(before[0], after[0])
    torch.testing.assert_close(before[1], after[1])
    described = searcher.describe()
    assert described["method"] == method
    if method.startswith("ivf"):
        assert described == {"method": method, "nprobe": 3}
        assert loaded.index.nlist == 8
    if method == "hnsw":
        assert described == {"method": "hnsw", "ef_search": 16}


def test_flat_and_every_cell_are_exact_and_search_parameters_apply(tmp_path):
    head = DistanceHead()
    gallery, queries = vectors_gallery(seed=1)
    exact = ExactSearch(gallery.embeddings, head).search(queries, 10)[0]
    save_gallery(with_index(gallery, head, SPECS["flat"]), tmp_path / "flat")
    assert torch.equal(
        make_searcher(load_gallery(tmp_path / "flat"), head).search(queries, 10)[0], exact
    )
    save_gallery(with_index(gallery, head, SPECS["ivf-flat"]), tmp_path / "ivf")
    loaded = load_gallery(tmp_path / "ivf")
    every_cell = make_searcher(loaded, head, nprobe=8)
    assert every_cell.describe() == {"method": "ivf-flat", "nprobe": 8}
    assert torch.equal(every_cell.search(queries, 10)[0], exact)
    one_cell = make_searcher(loaded, head, nprobe=1).search(queries, 10)[0]
    assert not torch.equal(one_cell, exact)  # approximate: fewer cells, other answers
    assert torch.equal(make_searcher(loaded, head, "exact").search(queries, 10)[0], exact)


def test_an_l1_gallery_index_proposes_and_the_head_scores(bce_ckpt, tmp_path):
    head = bce_ckpt.model.head
    images, _ = shape_set(6, seed=501)
    spec = IndexSpec("hnsw", hnsw_m=8, ef_search=64)
    built = build_gallery(bce_ckpt, images, [None] * 24, [f"i{i}" for i in range(24)],
                          tmp_path / "g", index=spec)  # fmt: skip
    assert built.method == "hnsw"
    loaded = load_gallery(tmp_path / "g")
    q = embed_images(bce_ckpt.model, draw_shapes(torch.tensor([0, 1, 2, 3]), seed=502))
    own, exact = make_searcher(loaded, head), make_searcher(loaded, head, "exact")
    assert torch.equal(own.search(q, 5)[0], exact.search(q, 5)[0])  # a pool of every item


def test_a_damaged_index_file_is_refused_in_one_line(tmp_path):
    head = DistanceHead()
    gallery, _ = vectors_gallery(seed=2)
    g = tmp_path / "g"
    save_gallery(with_index(gallery, head, SPECS["ivf-pq"]), g)
    raw = bytearray((g / "index.faiss").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (g / "index.faiss").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as err:
        load_gallery(g)
    assert str(g / "index.faiss") in str(err.value) and "\n" not in str(err.value)
    assert "does not belong with gallery.json" in str(err.value)

    (g / "index.faiss").unlink()
    with pytest.raises(CheckpointError, match=r"index\.faiss: missing"):
        load_gallery(g)


def test_an_index_of_another_gallery_is_refused_even_with_its_checksum(tmp_path):
    """An index file that is whole but another's (its sha256 written into gallery.json too):
    its vector count, size or kind does not match and it is refused naming the file."""
    head = DistanceHead()
    small, _ = vectors_gallery(n=300, seed=3)
    big, _ = vectors_gallery(n=600, seed=3)
    save_gallery(with_index(small, head, SPECS["ivf-flat"]), tmp_path / "small")
    save_gallery(with_index(big, head, SPECS["hnsw"]), tmp_path / "big")
    for other, found in (("small", "300 vectors"), ("big", "IndexHNSWFlat")):
        g = tmp_path / f"copy-{other}"
        save_gallery(with_index(big, head, SPECS["ivf-flat"]), g)
        raw = (tmp_path / other / "index.faiss").read_bytes()
        (g / "index.faiss").write_bytes(raw)
        info = json.loads((g / "gallery.json").read_text())
        info["index"]["sha256"] = hashlib.sha256(raw).hexdigest()
        (g / "gallery.json").write_text(json.dumps(info))
        with pytest.raises(CheckpointError) as err:
            load_gallery(g)
        message = str(err.value)
        assert message.startswith(str(g / "index.faiss")) and found in message, message


def test_adding_appends_to_the_trained_index(ckpt, tmp_path, monkeypatch):
    images, labels = shape_set(8, seed=511)
    names = [f"a{i}" for i in range(len(images))]
    spec = IndexSpec("ivf-flat", nlist=2, nprobe=2)
    build_gallery(ckpt, images, [SHAPES[i] for i in labels], names, tmp_path / "g", index=spec)
    built = load_gallery(tmp_path / "g")  # held: the quantizer belongs to its index
    before = faiss.downcast_index(built.index.quantizer).reconstruct_n(0, 2)

    trained = []
    monkeypatch.setattr(faiss.IndexIVFFlat, "train", lambda self, *a: trained.append(self))
    new = draw_shapes(torch.tensor([0, 1, 2, 3]), seed=512)
    merged = add_to_gallery(tmp_path / "g", ckpt, new, list(SHAPES), list("wxyz"))
    assert not trained and merged.method == "ivf-flat"
    loaded = load_gallery(tmp_path / "g")
    assert loaded.index.ntotal == len(loaded) == 36
    after = faiss.downcast_index(loaded.index.quantizer).reconstruct_n(0, 2)
    assert (after == before).all()  # the same cells
    q = embed_images(ckpt.model, new)
    indices, _ = make_searcher(loaded, ckpt.model.head).search(q, 1)
    assert indices[:, 0].tolist() == [32, 33, 34, 35]  # each new image finds itself


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [
        (IndexSpec("ivf-pq", nbits=8), 100, "at least 256 needed"),
        (IndexSpec("ivf-flat", nlist=200), 100, "--nlist 200: more cells than the 100 items"),
        (IndexSpec("ivf-pq", m=5), 1000, "--m 5: the embedding size 32 must be a multiple"),
        (IndexSpec("hnsw", nlist=4), 100, "--nlist 4: applies to --method ivf-flat or ivf-pq"),
        (IndexSpec("flat", ef_search=4), 100, "--ef-search 4: applies to --method hnsw"),
        (IndexSpec("ivf-flat", nprobe=0), 100, "--nprobe 0: expected a whole number"),
        (IndexSpec("annoy"), 100, "--method annoy: expected one of"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_training(spec, count, message):
    gallery, _ = vectors_gallery(n=count, seed=4)
    with pytest.raises(ArgumentError, match=message):
        with_index(gallery, DistanceHead(), spec)


def test_ivf_pq_is_refused_for_an_l1_head(bce_ckpt):
    gallery, _ = vectors_gallery(n=300, dim=84, seed=5, head="l1")
    with pytest.raises(ArgumentError, match="l1 head needs flat, ivf-flat or hnsw"):
        with_index(gallery, bce_ckpt.model.head, IndexSpec("ivf-pq", nbits=4))


def test_adding_skips_what_the_gallery_holds(ckpt, tmp_path):
    images, labels = shape_set(2, seed=521)
    named = [SHAPES[i] for i in labels]
    names = [f"/photos/{label}/{i}.png" for i, label in enumerate(named)]
    build_gallery(ckpt, images, named, names, tmp_path / "g")
    chunks = [
        GalleryItems(images[:4], named[:4], names[:4]),
        GalleryItems(images[4:], named[4:], names[4:]),
    ]
    merged, got = add_items_to_gallery(tmp_path / "g", ckpt, chunks)
    assert len(got) == 0 and got.already_held == 8 and len(merged) == 8
    # the same pixels under another spelling of the path, with the same label: held
    others = [n.replace("/photos/", "photos/") for n in names]
    merged, got = add_items_to_gallery(tmp_path / "g", ckpt, [GalleryItems(images, named, others)])
    assert len(got) == 0 and got.already_held == 8
    # the same pixels with another label, and a new image: both added
    new = draw_shapes(torch.tensor([0]), seed=522)
    chunk = GalleryItems(torch.cat([images[:1], new]), ["other", "bar"], ["c.png", "d.png"])
    merged, got = add_items_to_gallery(tmp_path / "g", ckpt, [chunk])
    assert got.names == ["c.png", "d.png"] and got.already_held == 0
    assert len(load_gallery(tmp_path / "g")) == 10


def test_a_writer_waits_for_the_lock_then_is_refused_in_one_line(tmp_path):
    g = tmp_path / "g"
    with gallery_lock(g):
        assert lock_path(g).exists()
        with pytest.raises(SiamnetError, match="another siamnet process is writing") as err:
            with gallery_lock(g, wait_s=0.2):
                pass
        assert str(g) in str(err.value) and "\n" not in str(err.value)
    assert not lock_path(g).exists()  # removed by its holder


def test_writers_take_turns(tmp_path):
    g, order = tmp_path / "g", []

    def writer(name: str) -> None:
        with gallery_lock(g, wait_s=30):
            order.append(f"{name} in")
            threading.Event().wait(0.05)
            order.append(f"{name} out")

    threads = [threading.Thread(target=writer, args=(str(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(order) == 8
    assert all(order[i].split()[0] == order[i + 1].split()[0] for i in range(0, 8, 2))
    assert not lock_path(g).exists()


def test_a_gallery_read_for_its_index_alone(ckpt, tmp_path):
    """Without embeddings, an indexed gallery is read without embeddings.pt and searched by its
    index with the same answers; exact search and saving say they need the embeddings; adding
    reads the gallery whole."""
    head = ckpt.model.head
    images, labels = shape_set(6, seed=531)
    named = [SHAPES[i] for i in labels]
    names = [f"s{i}" for i in range(len(images))]
    spec = IndexSpec("ivf-flat", nlist=2, nprobe=1)
    build_gallery(ckpt, images, named, names, tmp_path / "g", index=spec)
    q = embed_images(ckpt.model, draw_shapes(torch.tensor([0, 1, 2, 3]), seed=532))
    whole = load_gallery(tmp_path / "g")
    light = load_gallery(tmp_path / "g", embeddings=False)
    assert whole.whole and not light.whole and light.embeddings.is_meta
    assert (len(light), light.dim) == (len(whole), whole.dim) == (24, 84)
    found = make_searcher(light, head).search(q, 5)
    want = make_searcher(whole, head).search(q, 5)
    assert torch.equal(found[0], want[0])
    with pytest.raises(ArgumentError, match="exact search needs the gallery's embeddings"):
        make_searcher(light, head, "exact")
    with pytest.raises(ArgumentError, match="saving needs the gallery's embeddings"):
        save_gallery(light, tmp_path / "other")
    merged = add_to_gallery(light, ckpt, draw_shapes(torch.tensor([1]), seed=533), ["x"], ["n"])
    assert len(merged) == 25 and merged.whole and load_gallery(tmp_path / "g").index.ntotal == 25
    exact_gallery = tmp_path / "plain"
    build_gallery(ckpt, images, named, names, exact_gallery)
    assert load_gallery(exact_gallery, embeddings=False).whole  # no index: read whole


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda info: info.update(index="ivf"), "field index: expected an object"),
        (lambda info: info["index"].update(method="annoy"), "field index.method: expected one of"),
        (lambda info: info["index"].update(nprobe=0), "field index.nprobe: expected a positive"),
        (lambda info: info["index"].pop("sha256"), "field index.sha256 is missing"),
    ],
)
def test_an_index_description_of_the_wrong_type_is_one_line(tmp_path, change, message):
    gallery, _ = vectors_gallery(n=100, seed=6)
    save_gallery(
        with_index(gallery, DistanceHead(), IndexSpec("ivf-flat", nlist=2)), tmp_path / "g"
    )
    info_file = tmp_path / "g" / "gallery.json"
    info = json.loads(info_file.read_text())
    change(info)
    info_file.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=message) as err:
        load_gallery(tmp_path / "g")
    assert str(info_file) in str(err.value) and "\n" not in str(err.value)


def test_search_parameters_survive_faiss_torch_utils():
    # pytorch-metric-learning imports faiss.contrib.torch_utils, which swaps Index.search for
    # a version without search parameters: a program that imports both must still search
    import faiss.contrib.torch_utils  # noqa: F401

    gallery, queries = vectors_gallery()
    every_cell = IndexSpec("ivf-flat", nlist=8, nprobe=8)  # exact, if nprobe reaches faiss
    indexed = with_index(gallery, DistanceHead(), every_cell)
    assert hasattr(indexed.index, "search_numpy")  # the swap happened
    found = make_searcher(indexed, DistanceHead()).search(queries, 5)
    exact = make_searcher(gallery, DistanceHead(), "exact").search(queries, 5)
    ids, exact_ids = found[0], exact[0]  # [25, 5] each
    assert ids.shape == exact_ids.shape == (25, 5)
    overlap = sum(
        len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, exact_ids, strict=True)
    )
    assert overlap == 25 * 5
