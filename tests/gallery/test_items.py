"""Reading the items to put in a gallery: folders (labelled by sub-folder), files and data SPECs,
whole or a chunk at a time; streamed embedding; content hashes."""

from __future__ import annotations

import pytest
import torch

from siamnet.errors import DataError
from siamnet.gallery import content_hashes, iter_gallery_items, read_gallery_items
from siamnet.images import list_image_files, read_images
from siamnet.models.embed import embed_chunks, embed_files, embed_images

from shapes_model import write_shape_folder


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


def test_read_gallery_items_from_a_data_spec():
    from siamnet.data.registry import load_dataset

    dataset = load_dataset("digits", image_size=(28, 28))
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


def test_items_come_in_chunks_equal_to_reading_them_whole(tmp_path):
    root = write_shape_folder(tmp_path / "data", per_class=5, seed=162)
    (root / "ring" / "broken.png").write_text("not an image")
    whole = read_gallery_items(root, 1, (28, 28))
    chunks = list(iter_gallery_items(root, 1, (28, 28), chunk=6))
    assert [len(c.names) + len(c.failures) for c in chunks] == [6, 6, 6, 3]
    assert torch.equal(torch.cat([c.images for c in chunks]), whole.images)
    assert sum((c.names for c in chunks), []) == whole.names
    assert sum((c.labels for c in chunks), []) == whole.labels
    spec_chunks = list(iter_gallery_items("digits", 1, (28, 28), split="test", chunk=100))
    spec_whole = read_gallery_items("digits", 1, (28, 28), split="test")
    assert {len(c.names) for c in spec_chunks[:-1]} == {100}
    assert torch.equal(torch.cat([c.images for c in spec_chunks]), spec_whole.images)


def test_streamed_embeddings_equal_embedding_at_once(ckpt, tmp_path):
    root = write_shape_folder(tmp_path / "data", per_class=4, seed=163)
    (root / "bar" / "broken.png").write_text("not an image")
    files = list_image_files(root, recursive=True)
    images, ok, _ = read_images(files, 1, (28, 28))
    want = embed_images(ckpt.model, images)
    parts = list(embed_files(ckpt.model, files, 1, (28, 28), chunk=5, batch_size=2))
    assert len(parts) == 4 and sum(len(p[1]) for p in parts) == len(ok) == 16
    assert [f for p in parts for f in p[1]] == ok
    assert [str(f) for p in parts for f, _ in p[2]] == [str(root / "bar" / "broken.png")]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), want, rtol=1e-5, atol=1e-6)
    chunked = list(embed_chunks(ckpt.model, [images[:7], images[7:]], batch_size=3))
    torch.testing.assert_close(torch.cat(chunked), want, rtol=1e-5, atol=1e-6)


def test_content_hashes_tell_pixels_apart():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    images[2, 0, 1, 1] = 1
    hashes = content_hashes(images)
    assert hashes.shape == (3, 16) and hashes.dtype == torch.uint8
    assert torch.equal(hashes[0], hashes[1]) and not torch.equal(hashes[0], hashes[2])
    assert not torch.equal(content_hashes(torch.zeros(1, 1, 2, 8, dtype=torch.uint8))[0], hashes[0])
