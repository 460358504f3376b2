"""Reading image files into uint8 tensors at a model's channels and size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from siamnet.errors import DataError
from siamnet.images import (
    list_image_files,
    match_channels,
    read_image,
    read_image_bytes,
    read_images,
    read_support_folder,
)


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_grey_image_at_its_size_is_read_exactly(tmp_path):
    array = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    image = read_image(_png(tmp_path / "a.png", array), 1, (28, 28))
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
    assert torch.equal(image[0], torch.from_numpy(array))


def test_colour_image_becomes_grey_and_is_resized_bilinear(tmp_path):
    rgb = np.zeros((56, 40, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red: luminance 0.299 * 200 = 59.8
    path = _png(tmp_path / "red.png", rgb)
    image = read_image(path, 1, (28, 20))
    assert image.shape == (1, 28, 20)
    assert int(image.min()) == int(image.max()) == 60
    expected = np.array(Image.open(path).convert("L").resize((20, 28), Image.Resampling.BILINEAR))
    assert torch.equal(image[0], torch.from_numpy(expected))


def test_grey_image_becomes_three_channels(tmp_path):
    array = np.full((10, 12), 77, dtype=np.uint8)
    image = read_image(_png(tmp_path / "g.png", array), 3, (10, 12))
    assert image.shape == (3, 10, 12) and bool((image == 77).all())


def test_jpeg_and_bmp_are_read(tmp_path):
    array = np.full((28, 28, 3), 128, dtype=np.uint8)
    for name in ("a.jpg", "a.bmp"):
        Image.fromarray(array).save(tmp_path / name)
        image = read_image(tmp_path / name, 3, (28, 28))
        assert abs(float(image.float().mean()) - 128) < 2


def test_invert_turns_black_on_white_into_white_on_black(tmp_path):
    array = np.full((28, 28), 255, dtype=np.uint8)
    array[10:18, 12:16] = 0
    path = _png(tmp_path / "pen.png", array)
    plain = read_image(path, 1, (28, 28))
    inverted = read_image(path, 1, (28, 28), invert=True)
    assert torch.equal(inverted, 255 - plain)
    assert int(inverted[0, 14, 13]) == 255 and int(inverted[0, 0, 0]) == 0


def test_bytes_read_like_files(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    path = _png(tmp_path / "r.png", array)
    assert torch.equal(
        read_image_bytes(path.read_bytes(), 1, (28, 28)), read_image(path, 1, (28, 28))
    )


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40]
)
def test_corrupt_bytes_are_refused_with_the_name(content):
    with pytest.raises(DataError, match="upload.png"):
        read_image_bytes(content, 1, (28, 28), name="upload.png")


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    noise = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    good = _png(tmp_path / "good.png", noise)
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a truncated PNG
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad, 1, (28, 28))
    with pytest.raises(DataError, match="no such image file"):
        read_image(tmp_path / "missing.png", 1, (28, 28))


def test_read_images_skips_and_reports_bad_files(tmp_path):
    a = _png(tmp_path / "a.png", np.full((28, 28), 1, dtype=np.uint8))
    bad = tmp_path / "b.png"
    bad.write_text("garbage")
    c = _png(tmp_path / "c.png", np.full((28, 28), 3, dtype=np.uint8))
    images, ok, failures = read_images([a, bad, c], 1, (28, 28))
    assert images.shape == (2, 1, 28, 28)
    assert ok == [a, c]
    assert [int(x) for x in images[:, 0, 0, 0]] == [1, 3]
    assert len(failures) == 1 and failures[0][0] == bad and "b.png" in failures[0][1]


def test_list_image_files_filters_by_suffix_and_hidden(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_image_files(tmp_path, recursive=True)] == [
        "a.JPG",
        "b.png",
        "c.png",
    ]
    with pytest.raises(DataError, match="expected a folder"):
        list_image_files(tmp_path / "b.png")


def test_support_folder_labels_by_sub_folder(tmp_path):
    for cls, values in {"zeta": (5, 6), "alpha": (1,), "empty": ()}.items():
        (tmp_path / cls).mkdir()
        for v in values:
            _png(tmp_path / cls / f"{v}.png", np.full((8, 8), v, dtype=np.uint8))
    (tmp_path / "zeta" / "bad.png").write_text("not a png")
    images, labels, classes, paths, failures = read_support_folder(tmp_path, 1, (8, 8))
    assert classes == ["alpha", "zeta"]  # "empty" has no images
    assert labels.tolist() == [0, 1, 1]
    assert [int(v) for v in images[:, 0, 0, 0]] == [1, 5, 6]
    assert [p.name for p in paths] == ["1.png", "5.png", "6.png"]
    assert len(failures) == 1 and "bad.png" in failures[0][1]


def test_support_folder_without_class_folders_is_refused(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="one sub-folder of images per class"):
        read_support_folder(tmp_path, 1, (8, 8))


def test_match_channels_both_ways():
    grey = torch.tensor([[[[10]]], [[[200]]]], dtype=torch.uint8)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 1, 1) and rgb[:, :, 0, 0].tolist() == [[10] * 3, [200] * 3]
    red = torch.tensor([200, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert int(match_channels(red, 1)) == 60
