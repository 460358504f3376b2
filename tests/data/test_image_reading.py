"""Training (the folder loader) and inference (`siamnet.images`) read a file the same way:
EXIF orientation, transparency onto white, 16-bit and float pixels scaled; and both follow
symlinked class folders."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamnet.data.sources.folder_source import load_folder
from siamnet.gallery.items import read_gallery_items
from siamnet.images import class_folders, list_image_files, read_image, read_support_folder


def digit(seed: int = 0, size: tuple[int, int] = (12, 10)) -> np.ndarray:
    """uint8 ``[H, W]``: a dark stroke on a light, uneven background, every value 0..255
    somewhere likely, so that clipping or a wrong scale shows."""
    rng = np.random.default_rng(seed)
    image = rng.integers(100, 256, size, dtype=np.uint8)
    image[2:-2, size[1] // 2] = 0
    image[0, 0], image[-1, -1] = 0, 255
    return image


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 ``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA),
    written by hand: Pillow writes no 16-bit colour PNG."""
    height, width = array.shape[:2]
    color_type = {2: 0, 3: 2, 4: 6}[array.ndim if array.ndim == 2 else array.shape[2]]

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def two_class_folder(root: Path, name: str, write) -> Path:
    """`root` with class ``a`` holding `name` (written by ``write(path)``) and class ``b``
    holding a plain 8-bit PNG; returns the path of `name`."""
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "b").mkdir(exist_ok=True)
    Image.fromarray(digit(9)).save(root / "b" / "other.png")
    path = root / "a" / name
    write(path)
    return path


def training_image(root: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The first image of class ``a`` as the folder loader reads it at `size` (default: the
    folder's), uint8 ``[C, H, W]``."""
    data = load_folder(root, image_size=size).train
    return data.images[data.labels == data.classes.index("a")][0]


# --- bit depths --------------------------------------------------------------------------------
def save_wide(path: Path, array: np.ndarray) -> None:
    """Save an ``I;16``, ``I`` or ``F`` array with Pillow (PNG, PGM or TIFF by the suffix)."""
    Image.fromarray(array).save(path)


WIDE = {
    "16-bit.png": lambda a: a.astype(np.uint16) * 257,
    "16-bit.pgm": lambda a: a.astype(np.uint16) * 257,
    "16-bit.tif": lambda a: a.astype(np.uint16) * 257,
    "int32-16-bit-values.tif": lambda a: a.astype(np.int32) * 257,
    "int32-8-bit-values.tif": lambda a: a.astype(np.int32),
    "float-0-1.tif": lambda a: a.astype(np.float32) / 255,
    "float-0-255.tif": lambda a: a.astype(np.float32),
    "float-0-1000.tif": lambda a: a.astype(np.float32) * (1000 / 255),
}


@pytest.mark.parametrize("name", list(WIDE))
def test_wide_grey_images_read_like_their_8bit_version(tmp_path, name):
    array = digit()
    path = two_class_folder(tmp_path, name, lambda p: save_wide(p, WIDE[name](array)))
    expected = torch.from_numpy(array)[None]
    assert torch.equal(read_image(path, 1, array.shape), expected)
    assert torch.equal(training_image(tmp_path), expected)


def test_int32_beyond_16_bits_is_scaled_by_the_32_bit_range(tmp_path):
    array = digit()
    wide = array.astype(np.int32) * 2**23  # 255 * 2**23 is about 2**31
    path = two_class_folder(tmp_path, "wide.tif", lambda p: save_wide(p, wide))
    got = read_image(path, 1, array.shape)[0].int()
    assert int((got - torch.from_numpy(array).int()).abs().max()) <= 1
    assert torch.equal(training_image(tmp_path)[0].int(), got)


def test_float_tiff_with_nan_and_negatives_is_not_black(tmp_path):
    values = digit().astype(np.float32) / 255
    values[0, 1], values[0, 2] = np.nan, -0.5
    path = two_class_folder(tmp_path, "f.tif", lambda p: save_wide(p, values))
    got = read_image(path, 1, values.shape)[0]
    assert int(got[0, 1]) == int(got[0, 2]) == 0
    assert int(got[5, 0]) == round(float(values[5, 0]) * 255) and float(got.float().mean()) > 100


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_reads_like_its_8bit_version(tmp_path, channels):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    wide = array.astype(np.uint16) * 257
    if channels == 4:
        wide = np.dstack([wide, np.full((6, 5), 65535, np.uint16)])  # opaque
    path = two_class_folder(tmp_path, "c.png", lambda p: p.write_bytes(png16(wide)))
    expected = torch.from_numpy(array).permute(2, 0, 1)
    assert torch.equal(read_image(path, 3, (6, 5)), expected)
    assert torch.equal(training_image(tmp_path, (6, 5)), expected)


# --- orientation and transparency --------------------------------------------------------------
def test_exif_rotated_jpeg_reads_identically_in_training_and_inference(tmp_path):
    array = np.zeros((8, 16, 3), dtype=np.uint8)  # 8 high, 16 wide, stored on its side
    array[:, :4] = (250, 30, 30)

    def write(path: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 clockwise to display"
        Image.fromarray(array).save(path, exif=exif, quality=95)

    path = two_class_folder(tmp_path, "turned.jpg", write)
    inferred = read_image(path, 3, (16, 8))  # displayed: 16 high, 8 wide
    trained = training_image(tmp_path, (16, 8))
    assert trained.shape == (3, 16, 8)
    assert torch.equal(trained, inferred)
    assert int(trained[0, 0, -1]) > 200 and int(trained[0, -1, 0]) < 50  # red on top after turning


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L"])
def test_transparent_background_reads_as_white_in_training_and_inference(tmp_path, mode):
    strokes = np.zeros((10, 10), dtype=bool)
    strokes[2:8, 4:6] = True

    def write(path: Path) -> None:
        if mode in ("RGBA", "LA"):
            alpha = np.where(strokes, 255, 0).astype(np.uint8)
            colour = np.zeros((10, 10, len(mode) - 1), dtype=np.uint8)  # black everywhere
            Image.fromarray(np.dstack([colour, alpha]), mode).save(path)
        else:  # palette or grey with one transparent value: black strokes on "grey 7"
            grey = np.where(strokes, 0, 7).astype(np.uint8)
            Image.fromarray(grey).convert(mode).save(path, transparency=7)

    path = two_class_folder(tmp_path, "drawing.png", write)
    expected = torch.from_numpy(np.where(strokes, 0, 255).astype(np.uint8))[None]
    assert torch.equal(read_image(path, 1, (10, 10)), expected)
    assert torch.equal(read_image(path, 3, (10, 10)), expected.expand(3, -1, -1))
    trained = training_image(tmp_path, (10, 10))  # colour when the file's mode is (RGBA)
    assert torch.equal(trained, expected.expand(trained.shape[0], -1, -1))


# --- symlinks and empty folders ----------------------------------------------------------------
def linked_tree(tmp_path: Path) -> Path:
    """``data/`` with a real class ``a``, a symlinked class ``b``, a symlinked image inside
    ``a``, links that loop back up, and an empty class folder."""
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(digit(10 + k)).save(outside / "b" / f"{k}.png")
    Image.fromarray(digit(20)).save(outside / "loose.png")
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.fromarray(digit(1)).save(root / "a" / "0.png")
    os.symlink(outside / "loose.png", root / "a" / "1.png")
    os.symlink(outside / "b", root / "b", target_is_directory=True)
    os.symlink(root, root / "a" / "up", target_is_directory=True)  # a loop
    os.symlink(root / "b", outside / "b" / "self", target_is_directory=True)  # b into itself
    (root / "empty").mkdir()
    return root


def test_symlinked_class_folders_and_files_are_followed_by_every_reader(tmp_path):
    root = linked_tree(tmp_path)
    data = load_folder(root).train
    assert data.classes == ["a", "b"] and torch.bincount(data.labels).tolist() == [2, 2]
    assert torch.equal(data.images[1, 0], torch.from_numpy(digit(20)))  # the linked file
    _, labels, classes, _, _ = read_support_folder(root, 1, digit().shape)
    assert classes == ["a", "b"] and torch.bincount(labels).tolist() == [2, 2]
    assert [p.name for p in class_folders(root)] == ["a", "b", "empty"]
    listed = [p.relative_to(root).as_posix() for p in list_image_files(root, recursive=True)]
    assert listed == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    items = read_gallery_items(root, 1, digit().shape)
    assert items.labels == ["a", "a", "b", "b"]


def test_empty_class_folders_are_named_in_a_note(tmp_path):
    root = linked_tree(tmp_path)
    (root / "also empty" / "inner").mkdir(parents=True)
    (root / "also empty" / "inner" / "notes.txt").write_text("no images here")
    data = load_folder(root).train
    assert data.notes == ("skipped 2 folder(s) without images: also empty, empty",)


def test_empty_characters_of_an_alphabet_are_named(tmp_path):
    for char in ("c1", "c2"):
        (tmp_path / "Greek" / char).mkdir(parents=True)
        Image.fromarray(digit()).save(tmp_path / "Greek" / char / "0.png")
    (tmp_path / "Greek" / "c3").mkdir()
    data = load_folder(tmp_path).train
    assert data.classes == ["Greek/c1", "Greek/c2"] and data.groups == ["Greek", "Greek"]
    assert data.notes == ("skipped 1 folder(s) without images: Greek/c3",)
