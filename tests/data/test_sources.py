"""Loaders for CSV, IDX, image folders and .npz files, on small files written here."""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image, features

from siamnet.data.labeled import LabeledImages
from siamnet.data.registry import load_dataset, load_path
from siamnet.data.sources.builtin import load_digits
from siamnet.data.sources.csv_source import load_csv
from siamnet.data.sources.folder_source import load_folder
from siamnet.data.sources.idx_source import FASHION_CLASSES, find_idx_files, load_idx
from siamnet.data.sources.npz_source import load_npz, save_npz
from siamnet.errors import ArgumentError, DataError

# --- CSV ---------------------------------------------------------------------------------------
# Four 2x2 images: labels 3, 7, 3, 7; pixel values distinct per image.
CSV_ROWS = [[3, 0, 1, 2, 3], [7, 10, 20, 30, 255], [3, 4, 5, 6, 7], [7, 0, 0, 128, 9]]


def csv_text(rows, header: str | None = None, newline: str = "\n") -> str:
    lines = ([header] if header else []) + [",".join(str(v) for v in r) for r in rows]
    return newline.join(lines) + newline


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_csv_rows(data: LabeledImages, rows=CSV_ROWS, size=(2, 2)) -> None:
    values = np.array(rows)
    assert data.images.dtype == torch.uint8 and data.images.shape == (len(rows), 1, *size)
    assert torch.equal(data.images.reshape(len(rows), -1), torch.tensor(values[:, 1:]).byte())
    assert data.classes == [str(v) for v in sorted(set(values[:, 0]))]
    assert [data.classes[i] for i in data.labels.tolist()] == [str(v) for v in values[:, 0]]


@pytest.mark.parametrize(
    "header", [None, "label,1x1,1x2,2x1,2x2", "label,pixel0,pixel1,pixel2,pixel3", "label,0,1,2,3"]
)
def test_csv_with_and_without_header(tmp_path, header):
    path = write(tmp_path / "digits.csv", csv_text(CSV_ROWS, header))
    data = load_csv(path)
    assert_csv_rows(data)
    assert data.source == str(path)


def test_csv_gz_crlf_blank_lines_and_whole_floats(tmp_path):
    text = csv_text(CSV_ROWS, newline="\r\n") + "\r\n\r\n"
    path = tmp_path / "digits.csv.gz"
    path.write_bytes(gzip.compress(text.replace(",255", ",255.0").encode()))
    assert_csv_rows(load_csv(path))


def test_csv_string_labels(tmp_path):
    rows = [["cat", 1, 2, 3, 4], ["dog", 5, 6, 7, 8], ["cat", 9, 9, 9, 9]]
    data = load_csv(write(tmp_path / "pets.csv", csv_text(rows)))
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 1, 0]


def test_csv_non_square_needs_image_size(tmp_path):
    rows = [[0, 1, 2, 3, 4, 5, 6], [1, 6, 5, 4, 3, 2, 1]]
    path = write(tmp_path / "wide.csv", csv_text(rows))
    data = load_csv(path, image_size=(2, 3))
    assert data.image_size == (2, 3)
    assert data.images[0, 0].tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(DataError, match=r"wide\.csv: 6 pixel columns do not make a square"):
        load_csv(path)
    with pytest.raises(DataError, match=r"image size 4x4 needs 16 pixel columns .* have 6"):
        load_csv(path, image_size=(4, 4))


def test_csv_square_with_other_image_size_is_resized_with_a_note(tmp_path):
    data = load_csv(write(tmp_path / "d.csv", csv_text(CSV_ROWS)), image_size=(4, 4))
    assert data.image_size == (4, 4) and len(data) == 4
    assert any("resized all 4 images from 2x2 to 4x4" in n for n in data.notes)


def test_in_memory_images_resized_to_another_aspect_are_cropped_not_squeezed():
    from siamnet.data.labeled import LabeledImages
    from siamnet.data.sources import resize_labeled

    wide = torch.zeros(3, 1, 8, 24, dtype=torch.uint8)
    wide[:, :, :, 8:16] = 255  # the middle third white, the sides black
    data = LabeledImages(wide, torch.tensor([0, 1, 1]), ["a", "b"], source="wide")
    square = resize_labeled(data, (8, 8))
    assert square.image_size == (8, 8)
    assert bool((square.images == 255).all())  # only the centre band is left, not squeezed in
    assert any("centre cropped to its aspect" in n for n in square.notes)
    same_aspect = resize_labeled(data, (4, 12))
    row = same_aspect.images[0, 0, 0].tolist()  # the whole width, halved (edges blur)
    assert len(row) == 12 and row[:2] == row[-2:] == [0, 0] and row[5:7] == [255, 255]


def test_csv_large_file_is_parsed_exactly(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 10, (3000, 1)), rng.integers(0, 256, (3000, 784))], 1)
    path = tmp_path / "mnist.csv"
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    data = load_csv(path)
    assert data.images.shape == (3000, 1, 28, 28)
    pixels = torch.from_numpy(rows[:, 1:].astype(np.uint8))
    assert torch.equal(data.images.reshape(3000, -1), pixels)
    assert torch.equal(data.labels, torch.from_numpy(rows[:, 0]))


#: More rows than the CSV reader parses at once, so that labels meet in different chunks.
LONG = 20_000


def long_csv(path: Path, labels: list[str]) -> Path:
    """A CSV of 2x2 images, one row per label, pixels from the row number."""
    lines = [f"{y},{i % 256},1,2,3" for i, y in enumerate(labels)]
    return write(path, "\n".join(lines) + "\n")


def test_csv_labels_are_typed_once_for_the_whole_file(tmp_path):
    whole = [f"{i % 10}.0" for i in range(LONG)]  # "3.0" everywhere
    data = load_csv(long_csv(tmp_path / "floats.csv", whole))
    assert data.classes == [str(k) for k in range(10)]
    assert data.labels.tolist() == [i % 10 for i in range(LONG)]
    mixed = whole[:-1] + ["x"]  # one text label in the last chunk makes the column text
    data = load_csv(long_csv(tmp_path / "mixed.csv", mixed))
    assert data.classes == [f"{k}.0" for k in range(10)] + ["x"]
    assert [data.classes[i] for i in data.labels.tolist()] == mixed
    first = whole[:1] + ["x"] + whole[2:]  # the same with the text label in the first chunk
    assert load_csv(long_csv(tmp_path / "first.csv", first)).classes == data.classes
    spelled = [f"{i % 10}" if i < LONG // 2 else f"{i % 10}.0" for i in range(LONG)]
    assert load_csv(long_csv(tmp_path / "spelled.csv", spelled)).num_classes == 10


def test_csv_nan_label_is_named_by_its_line_in_a_later_chunk(tmp_path):
    labels = [str(i % 10) for i in range(LONG)]
    labels[LONG - 5] = "nan"
    with pytest.raises(DataError, match=rf"nan\.csv: line {LONG - 4}, column 1: label is NaN"):
        load_csv(long_csv(tmp_path / "nan.csv", labels))


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("7,1,2,3", r"line 3 has 4 columns; expected 5"),
        ("7,1,2,3,4,5", r"line 3 has 6 columns; expected 5"),
        ("7,1,x,3,4", r"line 3, column 3: 'x' is not a number"),
        ("7,1,,3,4", r"line 3, column 3: empty cell"),
        ("7,1,2,nan,4", r"line 3, column 4: pixel value NaN is outside 0..255"),
        ("7,1,2,3,256", r"line 3, column 5: pixel value 256 is outside 0..255"),
        ("7,-1,2,3,4", r"line 3, column 2: pixel value -1 is outside 0..255"),
        ("7,1,2.5,3,4", r"line 3, column 3: pixel value 2.5 is not a whole number"),
        ("label,1x1,1x2,2x1,2x2", r"line 3, column 2: '1x1' is not a number"),
        (",1,2,3,4", r"line 3, column 1: empty label"),
    ],
)
def test_csv_bad_rows_name_file_line_and_column(tmp_path, line, pattern):
    rows = [csv_text(CSV_ROWS[:2]).strip(), line, csv_text(CSV_ROWS[2:]).strip()]
    path = write(tmp_path / "bad.csv", "\n".join(rows) + "\n")
    where = re.escape(str(path))
    with pytest.raises(DataError, match=rf"^{where}: {pattern}") as err:
        load_csv(path)
    assert "\n" not in str(err.value)


def test_csv_bad_first_row_is_an_error_not_a_header(tmp_path):
    path = write(tmp_path / "bad.csv", "5,0,abc,0,0\n" + csv_text(CSV_ROWS))
    with pytest.raises(DataError, match=r"bad\.csv: line 1, column 3: 'abc' is not a number"):
        load_csv(path)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"empty file"),
        ("\n  \n", r"empty file"),
        ("label,1x1,1x2,2x1,2x2\n", r"only a header row"),
        (
            "label,a,b\n3,0,1,2,3\n7,1,2,3,4\n",
            r"header \(line 1\) has 3 columns but the rows have 5",
        ),
        ("3,0,1,2,3\n3,4,5,6,7\n", r"only one class \('3'\) in 2 examples"),
    ],
)
def test_csv_bad_files(tmp_path, text, pattern):
    path = write(tmp_path / "f.csv", text)
    with pytest.raises(DataError, match=rf"f\.csv.*{pattern}"):
        load_csv(path)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(csv_text(CSV_ROWS).encode())[:-12])
    with pytest.raises(DataError, match=r"d\.csv\.gz: truncated gzip file"):
        load_csv(path)


def test_csv_cells_numpy_cannot_read_are_named(tmp_path):
    path = write(tmp_path / "u.csv", "3,1,2,3,4\n7,1_0,2,3,4\n")  # Python's float takes 1_0
    with pytest.raises(DataError, match=r"u\.csv: line 2, column 2: '1_0' is not a number"):
        load_csv(path)
    near = write(tmp_path / "n.csv", "3,1,2,3,4\n7,1.0000001,2,3,4\n")
    with pytest.raises(DataError, match=r"n\.csv: line 2, column 2: pixel value 1\.0000001 is not"):
        load_csv(near)


@pytest.mark.parametrize("size", [(0, 4), (-2, -2), (4, 0)])
def test_image_sizes_below_one_pixel_are_refused_by_every_loader(tmp_path, size):
    csv = write(tmp_path / "d.csv", csv_text(CSV_ROWS))
    save_npz(sample(), tmp_path / "d.npz")
    make_idx(tmp_path / "idx", "train", 6)
    for cls in ("a", "b"):
        save_image(tmp_path / "imgs" / cls / "0.png", gray(1))
    loaders = [
        lambda: load_csv(csv, size),
        lambda: load_npz(tmp_path / "d.npz", size),
        lambda: load_idx(tmp_path / "idx", size),
        lambda: load_folder(tmp_path / "imgs", size),
        lambda: load_digits(size),
    ]
    for load in loaders:
        with pytest.raises(ArgumentError, match=r"expected a height and width of at least 1"):
            load()


# --- IDX ---------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x800 | array.ndim
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def make_idx(
    folder: Path, prefix: str, n: int, gz: bool = False, sep: str = "-", seed: int = 0, size=(4, 3)
):
    """Write ``<prefix>-images-idx3-ubyte`` (n images of `size`) and its labels (cycling 0..2)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
    labels = (np.arange(n) % 3).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    (folder / f"{prefix}-images{sep}idx3-ubyte{ext}").write_bytes(pack(idx_bytes(images)))
    (folder / f"{prefix}-labels{sep}idx1-ubyte{ext}").write_bytes(pack(idx_bytes(labels)))
    return images, labels


@pytest.mark.parametrize(("gz", "sep"), [(False, "-"), (True, "-"), (True, ".")])
def test_idx_folder_gives_train_then_test(tmp_path, gz, sep):
    test_images, test_labels = make_idx(tmp_path, "t10k", 5, gz, sep, seed=1)
    train_images, train_labels = make_idx(tmp_path, "train", 9, gz, sep, seed=2)
    dataset = load_idx(tmp_path)
    assert list(dataset.splits) == ["train", "test"]
    assert dataset.roles == {"train": "training", "test": "testing"}
    for part, images, labels in [
        (dataset.train, train_images, train_labels),
        (dataset.test, test_images, test_labels),
    ]:
        assert part.images.shape == (len(images), 1, 4, 3)
        assert torch.equal(part.images[:, 0], torch.from_numpy(images))
        assert torch.equal(part.labels, torch.from_numpy(labels.astype(np.int64)))
        assert part.classes == ["0", "1", "2"]


def test_find_idx_files_is_ordered_and_not_recursive(tmp_path):
    make_idx(tmp_path, "t10k", 3, gz=True)
    make_idx(tmp_path, "train", 3)
    make_idx(tmp_path / "sub", "train", 3)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_idx_files(tmp_path)] == [
        "train-images-idx3-ubyte",
        "t10k-images-idx3-ubyte.gz",
    ]
    assert find_idx_files(tmp_path / "empty") == []


def test_idx_single_file_labels_file_and_resize(tmp_path):
    images, _ = make_idx(tmp_path, "train", 6, gz=True)
    one = load_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert list(one.splits) == ["train"] and torch.equal(
        one.train.images[:, 0], torch.from_numpy(images)
    )
    via_labels = load_idx(tmp_path / "train-labels-idx1-ubyte.gz", image_size=(8, 6))
    assert via_labels.train.image_size == (8, 6) and via_labels.train.notes


def test_fashion_folder_gets_class_names(tmp_path):
    folder = tmp_path / "fashion-mnist"
    make_idx(folder, "train", 6)
    assert load_idx(folder).train.classes == list(FASHION_CLASSES[:3])


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda b: b"\x00\x00\x08\x01" + b[4:], r"magic number 0x00000801; expected 0x00000803"),
        (
            lambda b: b[:-5],
            r"truncated: the header promises 6x4x3 values \(88 bytes\) but the "
            r"file has 83 bytes",
        ),
        (lambda b: b + b"\x00", r"longer than its header says"),
        (lambda b: b[:10], r"10 bytes, shorter than an IDX images \(idx3\) header"),
    ],
)
def test_idx_damaged_images_file(tmp_path, damage, pattern):
    make_idx(tmp_path, "train", 6)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte: {pattern}"):
        load_idx(tmp_path)


def test_idx_label_count_mismatch_and_missing_labels(tmp_path):
    make_idx(tmp_path, "train", 6)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.array([0, 1, 2, 0, 1], dtype=np.uint8)))
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte: 5 labels but "
        r"train-images-idx3-ubyte has 6 images",
    ):
        load_idx(tmp_path)
    labels.unlink()
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte: no labels file beside it; "
        r"expected train-labels-idx1-ubyte",
    ):
        load_idx(tmp_path)


def test_idx_truncated_gzip(tmp_path):
    make_idx(tmp_path, "train", 6, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated gzip file"):
        load_idx(tmp_path)


def idx_header(magic: int, dims: list[int]) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    ("dims", "pattern"),
    [
        # 2**16 * 2**24 * 2**24 = 2**64: a product in int64 wraps to 0, matching an empty body
        ([2**16, 2**24, 2**24], r"truncated: the header promises 65536x16777216x16777216 values"),
        ([2**32 - 1] * 3, r"truncated: the header promises 4294967295x4294967295x4294967295"),
        ([6, 0, 3], r"the header gives images of 0x3 pixels; expected a height and width"),
        ([6, 4, 0], r"the header gives images of 4x0 pixels"),
        ([0, 4, 3], r"the file holds no images"),
    ],
)
def test_idx_header_dims_are_checked_with_exact_arithmetic(tmp_path, dims, pattern):
    make_idx(tmp_path, "train", 6)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(
        idx_header(0x803, dims) + bytes(dims[0] * dims[1] * dims[2] if 0 in dims else 0)
    )
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte: {pattern}"):
        load_idx(tmp_path)


# --- image folders -----------------------------------------------------------------------------
def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path)
    return array


def gray(value: int, size=(5, 4)) -> np.ndarray:
    """uint8 ``[H, W]`` with a gradient from `value`, so that images differ."""
    h, w = size
    return ((np.arange(h * w).reshape(h, w) + value) % 256).astype(np.uint8)


def test_class_folders_grayscale(tmp_path):
    expected = {}
    for cls, base in [("dog", 50), ("cat", 10)]:
        for k in range(3):
            expected[(cls, k)] = save_image(tmp_path / cls / f"{k}.png", gray(base + k))
    save_image(tmp_path / ".hidden" / "x.png", gray(0))
    (tmp_path / "cat" / "readme.txt").write_text("not an image")
    dataset = load_folder(tmp_path)
    data = dataset.train
    assert list(dataset.splits) == ["train"] and data.classes == ["cat", "dog"]
    assert data.groups is None and data.images.shape == (6, 1, 5, 4) and not data.notes
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(data.images[4, 0], torch.from_numpy(expected[("dog", 1)]))


def test_omniglot_layout_and_splits(tmp_path):
    for split, alphabets in [
        ("images_background", ["Greek", "Latin"]),
        ("images_evaluation", ["Tengwar"]),
    ]:
        for alphabet in alphabets:
            for char in ["character01", "character02"]:
                for k in range(2):
                    white = np.full((6, 6), 255, dtype=np.uint8)
                    white[k, :] = 0  # a black stroke on white
                    save_image(tmp_path / split / alphabet / char / f"{k}.png", white, mode="1")
    dataset = load_folder(tmp_path)
    assert list(dataset.splits) == ["background", "evaluation"]
    assert dataset.roles["background"].startswith("training")
    bg = dataset.train
    assert bg.classes == [
        "Greek/character01",
        "Greek/character02",
        "Latin/character01",
        "Latin/character02",
    ]
    assert bg.groups == ["Greek", "Greek", "Latin", "Latin"] and len(bg) == 8
    assert bg.channels == 1 and set(bg.images.unique().tolist()) == {0, 255}
    assert bg.images[1, 0, 1].tolist() == [0] * 6 and bg.images[1, 0, 0].tolist() == [255] * 6
    assert dataset.test.classes == ["Tengwar/character01", "Tengwar/character02"]


def test_train_test_folders(tmp_path):
    for split, n in [("train", 3), ("test", 2)]:
        for cls in ["a", "b"]:
            for k in range(n):
                save_image(tmp_path / split / cls / f"{k}.png", gray(k))
    dataset = load_folder(tmp_path)
    assert list(dataset.splits) == ["train", "test"]
    assert len(dataset.train) == 6 and len(dataset.test) == 4


def test_colour_images_make_every_image_rgb(tmp_path):
    rgb = np.zeros((5, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    save_image(tmp_path / "red" / "r.png", rgb)
    save_image(tmp_path / "red" / "r2.jpg", np.full((5, 4, 3), 90, dtype=np.uint8))
    save_image(tmp_path / "plain" / "p.png", gray(7))
    data = load_folder(tmp_path).train
    assert data.channels == 3 and data.classes == ["plain", "red"]
    plain = data.images[data.labels == 0][0]
    assert torch.equal(plain, torch.from_numpy(gray(7))[None].expand(3, -1, -1))
    red = data.images[1]
    assert red[0].unique().tolist() == [200] and red[1].unique().tolist() == [0]


def test_grey_palettes_stay_grayscale_and_rgb_files_make_colour_by_their_mode(tmp_path):
    save_image(tmp_path / "a" / "x.png", gray(1))
    save_image(tmp_path / "b" / "y.png", gray(2), mode="P")
    data = load_folder(tmp_path).train
    assert data.channels == 1
    assert torch.equal(data.images[1, 0], torch.from_numpy(gray(2)))
    # the channel count comes from the files' modes (headers only): an RGB file is colour,
    # even when its channels are equal
    save_image(tmp_path / "a" / "x.png", np.stack([gray(1)] * 3, -1))
    data = load_folder(tmp_path).train
    assert data.channels == 3 and torch.equal(
        data.images[0], torch.from_numpy(gray(1))[None].expand(3, -1, -1)
    )


def test_mixed_sizes_are_fitted_to_the_median_with_a_short_summary(tmp_path):
    for k in range(3):
        save_image(tmp_path / "a" / f"{k}.png", gray(k, (6, 6)))
    save_image(tmp_path / "b" / "big.png", np.full((12, 12), 40, dtype=np.uint8))
    save_image(tmp_path / "b" / "small.png", gray(0, (6, 6)))
    data = load_folder(tmp_path).train
    assert data.image_size == (6, 6)
    assert data.notes == (
        "image sizes: heights 6..12 (median 6), widths 6..12 (median 6), 2 distinct; modes: L 5",
        "resized 1 of 5 images to 6x6 (the median shorter side; --image-size to choose; "
        "shorter side scaled, centre cropped)",
    )
    assert data.images[3].unique().tolist() == [40]
    fixed = load_folder(tmp_path, image_size=(3, 3)).train
    assert fixed.image_size == (3, 3) and "resized 5 of 5 images to 3x3" in fixed.notes[1]


def test_folder_errors_name_the_file_or_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no images found .*<class>/<image>"):
        load_folder(empty)
    loose = tmp_path / "loose"
    save_image(loose / "x.png", gray(0))
    with pytest.raises(DataError, match=r"loose: 1 images but no class folders"):
        load_folder(loose)
    one = tmp_path / "one"
    save_image(one / "only" / "x.png", gray(0))
    save_image(one / "only" / "y.png", gray(1))
    with pytest.raises(DataError, match=r"one: only one class \('only'\) in 2 examples"):
        load_folder(one)
    save_image(one / "other" / "z.png", gray(2))
    (one / "other" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"other/broken\.png: not a readable image"):
        load_folder(one)


def avif_bytes() -> bytes:
    """A real AVIF with its primary-item box renamed (Pillow's AVIF plugin raises
    RuntimeError on it), or, where this Pillow cannot write AVIF, just an AVIF header."""
    if not features.check("avif"):
        return b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64
    buf = io.BytesIO()
    Image.fromarray(gray(3)).convert("RGB").save(buf, format="AVIF")
    return buf.getvalue().replace(b"pitm", b"xitm")


def test_folder_refuses_other_formats_whatever_the_name(tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the EPS plugin ran")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", must_not_run)
    for cls in ("a", "b"):
        save_image(tmp_path / cls / "0.png", gray(1))
    bad = tmp_path / "b" / "photo.png"
    bad.write_bytes(avif_bytes())
    with pytest.raises(
        DataError, match=r"b/photo\.png: an image in format AVIF; expected PNG,"
    ) as err:
        load_folder(tmp_path)
    assert "\n" not in str(err.value)
    bad.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    with pytest.raises(DataError, match=r"b/photo\.png: an image in format EPS; expected PNG,"):
        load_folder(tmp_path)


def test_folder_reads_tiff_and_netpbm(tmp_path):
    save_image(tmp_path / "a" / "x.tif", gray(1))
    save_image(tmp_path / "b" / "y.pgm", gray(2))
    data = load_folder(tmp_path).train
    assert data.classes == ["a", "b"] and data.channels == 1
    assert torch.equal(data.images[:, 0], torch.from_numpy(np.stack([gray(1), gray(2)])))


# --- npz ---------------------------------------------------------------------------------------
def sample(channels: int = 1, groups: bool = True) -> LabeledImages:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, channels, 4, 5), generator=gen, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    classes = ["Greek/alpha", "Greek/beta", "Latin/a"]
    return LabeledImages(
        images, labels, classes, ["Greek", "Greek", "Latin"] if groups else None, source="sample"
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_round_trip_is_identical(tmp_path, channels):
    data = sample(channels)
    path = save_npz(data, tmp_path / "set.npz")
    back = load_npz(path)
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels)
    assert back.classes == data.classes and back.groups == data.groups
    assert back.source == str(path) and not back.notes
    assert [p.name for p in tmp_path.iterdir()] == ["set.npz"]  # no temporary file left


def test_npz_layouts_and_types(tmp_path):
    base = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 6)).astype(np.uint8)
    labels = np.array([5, 9, 5, 9])
    cases = {
        "nhw": (base[:, 0], base[:, :1]),
        "nhwc": (base.transpose(0, 2, 3, 1), base),
        "nhwc1": (base[:, :1].transpose(0, 2, 3, 1), base[:, :1]),
        "float255": (base.astype(np.float64), base),
        "int16": (base.astype(np.int16), base),
    }
    for name, (stored, expected) in cases.items():
        np.savez(tmp_path / f"{name}.npz", images=stored, labels=labels)
        data = load_npz(tmp_path / f"{name}.npz")
        assert torch.equal(data.images, torch.from_numpy(expected)), name
        assert data.classes == ["5", "9"] and data.labels.tolist() == [0, 1, 0, 1]
    np.savez(tmp_path / "unit.npz", images=base / 255.0, labels=np.array(["b", "a", "b", "a"]))
    unit = load_npz(tmp_path / "unit.npz")
    assert torch.equal(unit.images, torch.from_numpy(base)) and unit.classes == ["a", "b"]
    assert unit.labels.tolist() == [1, 0, 1, 0] and "0..1 scaled to 0..255" in unit.notes[0]


def test_npz_classes_by_index_and_by_name(tmp_path):
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    np.savez(
        tmp_path / "a.npz",
        images=images,
        labels=np.array([2, 0, 2]),
        classes=np.array(["zebra", "ant", "cow"]),
    )
    data = load_npz(tmp_path / "a.npz")
    assert data.classes == ["zebra", "ant", "cow"] and data.labels.tolist() == [2, 0, 2]
    np.savez(
        tmp_path / "b.npz",
        images=images,
        labels=np.array(["cow", "zebra", "cow"]),
        classes=np.array(["zebra", "ant", "cow"]),
        groups=np.array(["x", "y", "x"]),
    )
    data = load_npz(tmp_path / "b.npz", image_size=(4, 4))
    assert data.labels.tolist() == [2, 0, 2] and data.groups == ["x", "y", "x"]
    assert data.image_size == (4, 4)


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"images": np.zeros((2, 3, 3))}, r"missing array\(s\) labels; the file has images"),
        ({"x": np.zeros(2)}, r"missing array\(s\) images, labels; the file has x"),
        (
            {"images": np.zeros((3, 2, 2)), "labels": np.zeros(2)},
            r"labels have shape \[2\] but there are 3 images",
        ),
        (
            {"images": np.full((2, 2, 2), np.nan), "labels": np.arange(2)},
            r"images hold NaN or infinite values",
        ),
        (
            {"images": np.full((2, 2, 2), 300.0), "labels": np.arange(2)},
            r"float images range 300..300; expected 0..1 or 0..255",
        ),
        (
            {"images": np.full((2, 2, 2), -1), "labels": np.arange(2)},
            r"images hold integers -1..-1",
        ),
        (
            {"images": np.zeros((2, 5, 2, 2)), "labels": np.arange(2)},
            r"images have shape \[2, 5, 2, 2\]",
        ),
        (
            {"images": np.zeros((2, 2, 2)), "labels": np.arange(2), "classes": np.array(["a"])},
            r"labels range 0..1 but there are 1 class names",
        ),
        (
            {
                "images": np.zeros((2, 2, 2)),
                "labels": np.array(["a", "q"]),
                "classes": np.array(["a", "b"]),
            },
            r"label 'q' is not among the 2 class names",
        ),
        (
            {"images": np.zeros((2, 2, 2)), "labels": np.arange(2), "groups": np.array(["g"])},
            r"1 groups but 2 classes",
        ),
    ],
)
def test_npz_bad_contents(tmp_path, arrays, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"bad\.npz: {pattern}"):
        load_npz(path)


def test_npz_not_a_zip_and_pickled_objects(tmp_path):
    path = tmp_path / "fake.npz"
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)
    with pytest.raises(DataError, match=r"fake\.npz: not an \.npz file"):
        load_npz(path)
    obj = tmp_path / "obj.npz"
    np.savez(obj, images=np.zeros((2, 2, 2)), labels=np.array([1, "a"], dtype=object))
    with pytest.raises(
        DataError, match=r"obj\.npz: array labels holds Python objects \(dtype object\), which "
    ):
        load_npz(obj)
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as zf:
        zf.writestr("images.npy", b"not an array")
    with pytest.raises(DataError, match=r"junk\.npz"):
        load_npz(tmp_path / "junk.npz")


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        (
            {"images": np.zeros((0, 2, 2), dtype=np.uint8), "labels": np.zeros(0, np.int64)},
            r"images have shape \[0, 2, 2\], no images; expected at least one",
        ),
        (
            {"images": np.zeros((0, 2, 2), dtype=np.int16), "labels": np.zeros(0)},
            r"images have shape \[0, 2, 2\], no images",
        ),
        (
            {"images": np.zeros((0, 1, 2, 2)), "labels": np.array(["a"])[:0]},
            r"images have shape \[0, 1, 2, 2\], no images",
        ),
        (
            {"images": np.zeros((3, 0, 4), dtype=np.uint8), "labels": np.arange(3)},
            r"images have shape \[3, 0, 4\], 0x4 pixels each; expected a height and width",
        ),
        (
            {"images": np.zeros((3, 1, 4, 0)), "labels": np.arange(3)},
            r"images have shape \[3, 1, 4, 0\], 4x0 pixels each",
        ),
        (
            {"images": np.zeros((2, 2, 2)), "labels": np.array([0.5, 1.0])},
            r"labels hold NaN, fractional or huge values; expected integers",
        ),
        (
            {"images": np.zeros((2, 2, 2)), "labels": np.array([1e30, 2e30])},
            r"labels hold NaN, fractional or huge values",
        ),
        (
            {"images": np.zeros((2, 2, 2)), "labels": np.array([1j, 2j])},
            r"labels have type complex128; expected integers or strings",
        ),
        (
            {"images": np.zeros((2, 2, 2)), "labels": np.array([[0, 1]])},
            r"labels have shape \[1, 2\] but there are 2 images",
        ),
        (
            {
                "images": np.zeros((2, 2, 2)),
                "labels": np.arange(2),
                "classes": np.array(["a", "a"]),
            },
            r"class name 'a' appears more than once in classes",
        ),
        (
            {"images": np.zeros((2, 2, 2), dtype=np.complex64), "labels": np.arange(2)},
            r"images have type complex64; expected uint8 or float pixels",
        ),
    ],
)
def test_npz_empty_flat_and_odd_arrays(tmp_path, arrays, pattern):
    path = tmp_path / "odd.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"odd\.npz: {pattern}"):
        load_npz(path)


def npy_member(shape: tuple[int, ...], body: bytes, dtype: str = "|u1") -> bytes:
    """A .npy file whose header claims `shape` of `dtype`, followed by `body`."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + body


def test_npz_headers_are_checked_before_reading(tmp_path):
    labels = io.BytesIO()
    np.save(labels, np.arange(2))
    cases = {
        "forged": (
            npy_member((2**20, 2**20, 2**20), b"\0" * 8),
            r"array images is damaged: "
            r"its header promises 1048576x1048576x1048576 values of uint8 \(1,152,921,",
        ),
        "short": (
            npy_member((2, 2, 2), b"\0" * 5),
            r"array images is damaged: its header promises 2x2x2 values of uint8 \(8 bytes\) "
            r"but it holds 5 bytes",
        ),
        "junk": (b"not an array at all", r"images\.npy is not a \.npy array"),
        "objects": (npy_member((2,), b"\0" * 16, "|O"), r"array images holds Python objects"),
    }
    for name, (member, pattern) in cases.items():
        path = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("images.npy", member)
            zf.writestr("labels.npy", labels.getvalue())
        with pytest.raises(DataError, match=rf"{name}\.npz: {pattern}"):
            load_npz(path)


def test_npz_encrypted_zip_is_refused_in_one_line(tmp_path):
    path = tmp_path / "locked.npz"
    np.savez(path, images=np.zeros((2, 2, 2), np.uint8), labels=np.arange(2))
    data = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local, central
        at = data.find(signature)
        while at >= 0:
            data[at + flag_at] |= 1  # "encrypted"
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"locked\.npz: cannot read this \.npz file \(.*encrypted"):
        load_npz(path)


# --- dispatch ----------------------------------------------------------------------------------
def test_load_dataset_picks_the_loader(tmp_path):
    csv = write(tmp_path / "d.csv", csv_text(CSV_ROWS))
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(csv.read_bytes()))
    save_npz(sample(), tmp_path / "d.npz")
    make_idx(tmp_path / "idx", "train", 6)
    make_idx(tmp_path / "idx", "t10k", 3)
    for cls in ("a", "b"):
        save_image(tmp_path / "imgs" / cls / "0.png", gray(1))
    assert len(load_dataset(str(csv)).train) == 4
    assert load_dataset(str(tmp_path / "d.csv.gz")).train.image_size == (2, 2)
    assert load_dataset(str(tmp_path / "d.npz")).train.groups == ["Greek", "Greek", "Latin"]
    assert list(load_dataset(str(tmp_path / "idx")).splits) == ["train", "test"]
    assert len(load_path(tmp_path / "idx" / "t10k-images-idx3-ubyte").train) == 3
    assert load_dataset(str(tmp_path / "imgs"), image_size=(3, 3)).train.image_size == (3, 3)
    write(tmp_path / "d.txt", "x")
    with pytest.raises(DataError, match=r"d\.txt: unknown data format"):
        load_dataset(str(tmp_path / "d.txt"))
