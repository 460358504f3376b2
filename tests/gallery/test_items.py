"""Reading the items to put in a gallery: folders (labelled by sub-folder), files and data SPECs."""

from __future__ import annotations

import pytest
import torch

from siamnet.errors import DataError
from siamnet.gallery import read_gallery_items

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
