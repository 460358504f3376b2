"""`siamnet data info|show|fetch` through the installed command: the built-in digits, small
files of every format, and every kind of bad input refused with one line and exit status 2.

The commands run as subprocesses, several at a time (each spends most of its time importing
torch), and every test reads the result of its own command.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from helpers import refused, siamnet

PIXELS = 28 * 28


# --- files -----------------------------------------------------------------------------------
def csv_rows(labels: list[int], seed: int = 0) -> list[list[str]]:
    """MNIST-format rows (no header): a label, then 784 pixel values 0..255."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (len(labels), PIXELS))
    return [[str(y), *map(str, row)] for y, row in zip(labels, pixels.tolist(), strict=True)]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join(",".join(row) + "\n" for row in rows))
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 `array` (magic 0x08 = unsigned byte, then the dimensions)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, n_images: int, n_labels: int, gz: bool) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = idx_bytes(rng.integers(0, 256, (n_images, 28, 28)))
    labels = idx_bytes(np.arange(n_labels) % 3)
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else bytes
    (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(pack(images))
    (folder / f"train-labels-idx1-ubyte{suffix}").write_bytes(pack(labels))
    return folder


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28)).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def damaged_avif() -> bytes:
    """An AVIF whose primary-item box is renamed (Pillow's AVIF plugin raises RuntimeError on
    it); just an AVIF header where this Pillow cannot write AVIF."""
    if not features.check("avif"):
        return b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="AVIF")
    return buf.getvalue().replace(b"pitm", b"xitm")


def write_photo_folder(folder: Path) -> Path:
    """Three classes of colour and grey photos (JPEG, PNG, RGBA PNG) of six sizes."""
    rng = np.random.default_rng(5)
    sizes = [(30, 40), (40, 30), (36, 36), (24, 48), (30, 40), (50, 44)]
    for k, (h, w) in enumerate(sizes * 2):
        path = folder / f"class{k % 3}" / f"{k}.{'jpg' if k % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
        image = image.convert("RGBA") if k % 4 == 2 else image.convert("L") if k == 5 else image
        image.save(path)
    return folder


def write_image_folder(folder: Path) -> Path:
    for i, name in enumerate(["circle/1.png", "circle/2.png", "square/1.png", "square/2.png"]):
        write_png(folder / name, seed=i)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data-cli")
    f: dict[str, Path] = {"root": root}
    f["good_csv"] = write_csv(root / "good.csv", csv_rows([0, 1, 1, 0, 2, 2]))
    rows = csv_rows([0, 1, 1, 0])
    rows[2][100] = "ink"  # third row
    f["text_csv"] = write_csv(root / "text_cell.csv", rows)
    rows = csv_rows([0, 1, 1, 0])
    rows[1] = rows[1][:700]  # second row
    f["short_csv"] = write_csv(root / "short_row.csv", rows)
    rows = csv_rows([0, 1, 1, 0])
    rows[3][5] = "300"  # fourth row
    f["range_csv"] = write_csv(root / "out_of_range.csv", rows)
    f["one_class_csv"] = write_csv(root / "one_class.csv", csv_rows([7, 7, 7, 7]))
    f["empty_csv"] = root / "empty.csv"
    f["empty_csv"].write_bytes(b"")
    f["empty_dir"] = root / "empty_folder"
    f["empty_dir"].mkdir()
    f["good_idx"] = write_idx_folder(root / "idx_good", 6, 6, gz=True)
    truncated = write_idx_folder(root / "idx_truncated", 6, 6, gz=True)
    images = truncated / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    f["truncated_idx"] = truncated
    f["count_idx"] = write_idx_folder(root / "idx_count", 6, 5, gz=False)
    f["good_images"] = write_image_folder(root / "shapes")
    f["photos"] = write_photo_folder(root / "photos")
    corrupt = write_image_folder(root / "shapes_corrupt")
    (corrupt / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    f["corrupt_images"] = corrupt
    avif = write_image_folder(root / "shapes_avif")
    (avif / "circle" / "photo.png").write_bytes(damaged_avif())
    f["avif_images"] = avif
    f["empty_npz"] = root / "empty.npz"
    np.savez(f["empty_npz"], images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64))
    overflow = write_idx_folder(root / "idx_overflow", 6, 6, gz=False)
    dims = (2**16, 2**24, 2**24)  # their product wraps to 0 in int64
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", *dims)
    (overflow / "train-images-idx3-ubyte").write_bytes(header)
    f["overflow_idx"] = overflow
    f["cache"] = root / "cache"  # a data cache holding MNIST's four files, all damaged (empty)
    (f["cache"] / "mnist").mkdir(parents=True)
    for part in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (f["cache"] / "mnist" / f"{part}-ubyte.gz").touch()
    f["no_cache"] = root / "no_cache"
    return f


# Every command of this module, run concurrently once: name -> arguments (paths by file key),
# then environment variables for the fetch commands.
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused
FETCH_ENV = {
    "fetch_damaged": {"SIAMNET_DATA": "{cache}", "SIAMNET_URL_MNIST": UNREACHABLE},
    "fetch_unreachable": {"SIAMNET_DATA": "{no_cache}", "SIAMNET_URL_MNIST": UNREACHABLE},
}
COMMANDS: dict[str, tuple[str, ...]] = {
    "info_text": ("data", "info", "digits"),
    "info_json": ("data", "info", "digits", "--json"),
    "show": ("data", "show", "digits", "--out", "{root}/figures/pairs.png", "--seed", "3"),
    "good_csv": ("data", "info", "{good_csv}", "--json"),
    "good_idx": ("data", "info", "{good_idx}", "--json"),
    "good_images": ("data", "info", "{good_images}", "--json", "--image-size", "14x14"),
    "photos_text": ("data", "info", "{photos}"),
    "photos_json": ("data", "info", "{photos}", "--json"),
    "text_csv": ("data", "info", "{text_csv}"),
    "short_csv": ("data", "info", "{short_csv}"),
    "range_csv": ("data", "info", "{range_csv}"),
    "one_class_csv": ("data", "info", "{one_class_csv}"),
    "truncated_idx": ("data", "info", "{truncated_idx}"),
    "corrupt_images": ("data", "info", "{corrupt_images}"),
    "avif_images": ("data", "info", "{avif_images}"),
    "empty_npz": ("data", "info", "{empty_npz}"),
    "overflow_idx": ("data", "info", "{overflow_idx}"),
    "empty_csv": ("data", "info", "{empty_csv}"),
    "empty_dir": ("data", "info", "{empty_dir}"),
    "count_idx": ("data", "info", "{count_idx}"),
    "missing": ("data", "info", "{root}/no_such_file.csv"),
    "bad_size": ("data", "info", "digits", "--image-size", "28by28"),
    "show_bad_split": ("data", "show", "{good_csv}", "--out", "{root}/x.png", "--split", "valid"),
    "fetch_unknown": ("data", "fetch", "cifar-100"),
    "fetch_digits": ("data", "fetch", "digits"),
    "fetch_damaged": ("data", "fetch", "mnist"),
    "fetch_unreachable": ("data", "fetch", "mnist"),
}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def before(files) -> dict[str, bytes]:
    """The test files as they were before any command ran."""
    return snapshot(files["root"])


@pytest.fixture(scope="module")
def results(files, before) -> dict[str, subprocess.CompletedProcess]:
    paths = {key: str(value) for key, value in files.items()}
    commands = {name: [a.format(**paths) for a in args] for name, args in COMMANDS.items()}
    envs = {n: {k: v.format(**paths) for k, v in e.items()} for n, e in FETCH_ENV.items()}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {
            name: pool.submit(siamnet, *args, env=envs.get(name)) for name, args in commands.items()
        }
        return {name: future.result() for name, future in futures.items()}


# --- digits ----------------------------------------------------------------------------------
def test_info_text(results):
    result = results["info_text"]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("digits: 1,797 examples in 2 splits")
    assert "train: training" in out and "test: testing" in out
    assert "1,347" in out and "450" in out
    assert out.count("classes    10") == 2
    assert out.count("28x28, 1 channel (grey), uint8") == 2
    assert out.count("pixels     0..255, mean") == 2
    assert "counts     0: 133  1: 136" in out  # every class listed (10 <= 20)
    assert "note       8x8 scikit-learn digits" in out


def test_info_json(results):
    result = results["info_json"]
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    train, test = info["splits"]
    assert (train["name"], test["name"]) == ("train", "test")
    assert train["role"].startswith("training") and test["role"].startswith("testing")
    assert (train["examples"], test["examples"]) == (1347, 450)
    for split in (train, test):
        assert split["classes"] == 10 and split["groups"] is None
        assert (split["height"], split["width"], split["channels"]) == (28, 28, 1)
        assert (split["pixel_min"], split["pixel_max"], split["dtype"]) == (0, 255, "uint8")
        assert 0 < split["pixel_mean"] < 255
        counts = split["class_counts"]
        assert list(counts) == [str(i) for i in range(10)]
        assert sum(counts.values()) == split["examples"]
        per = split["per_class"]
        assert per["min"] == min(counts.values()) and per["max"] == max(counts.values())
        assert split["notes"]


def test_show_writes_a_png_of_the_pairs(results, files):
    result = results["show"]
    assert result.returncode == 0, result.stderr
    path = files["root"] / "figures" / "pairs.png"
    assert result.stdout.strip() == str(path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert width > 3 * height and height >= 2 * 28  # ten columns of two images
    assert pixels.std() > 20 and len(np.unique(pixels)) > 50  # not blank
    assert not list(path.parent.glob(".*.tmp"))  # written through a temporary name


def test_help_ends_with_an_example():
    for verb in (["data"], ["data", "info"], ["data", "show"], ["data", "fetch"]):
        result = siamnet(*verb, "--help")
        assert result.returncode == 0 and "example:" in result.stdout
        assert "siamnet data" in result.stdout.split("example:")[1]
    top = siamnet("--help")
    assert top.returncode == 0 and "data " in top.stdout


def test_fetch_prints_where_the_data_is(results):
    result = results["fetch_digits"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["digits: built in (scikit-learn), nothing to fetch"]


def test_fetch_refuses_a_damaged_cache_offline(results, files):
    damaged = files["cache"] / "mnist" / "train-images-idx3-ubyte.gz"
    line = refused(results["fetch_damaged"], f"{damaged}: checksum mismatch", "was not used")
    assert UNREACHABLE in line
    assert damaged.read_bytes() == b""  # left as it was


# --- good files of every format ----------------------------------------------------------------
def test_info_of_small_files(results):
    csv = json.loads(results["good_csv"].stdout)["splits"]
    assert len(csv) == 1 and csv[0]["examples"] == 6 and csv[0]["classes"] == 3
    assert csv[0]["class_counts"] == {"0": 2, "1": 2, "2": 2}
    assert (csv[0]["height"], csv[0]["width"], csv[0]["channels"]) == (28, 28, 1)
    idx = json.loads(results["good_idx"].stdout)["splits"]
    assert idx[0]["examples"] == 6 and idx[0]["classes"] == 3
    images = json.loads(results["good_images"].stdout)["splits"]
    assert images[0]["examples"] == 4 and images[0]["class_counts"] == {"circle": 2, "square": 2}
    assert (images[0]["height"], images[0]["width"]) == (14, 14)
    assert any("14x14" in note for note in images[0]["notes"])  # resized, and says so


def test_info_of_a_photo_folder_summarises_sizes_and_modes_in_a_line(results):
    result = results["photos_text"]
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("  note")]
    assert len(notes) == 2 and "sizes found" not in result.stdout
    sizes = (
        "image sizes: heights 24..50 (median 33), widths 30..48 (median 40), 5 distinct; modes: "
        "RGB 8, RGBA 3, L 1"
    )
    assert " ".join(result.stdout.split()).count(sizes) == 1
    # median shorter side of 30, 30, 36, 24, 30, 44 (each twice): 30
    assert "images     30x30, 3 channels (colour), uint8" in result.stdout
    assert "resized 12 of 12 images to 30x30 (the median shorter side;" in result.stdout
    assert "memory     31.6 KB decoded; held in memory for training (--cache auto)" in result.stdout
    info = json.loads(results["photos_json"].stdout)["splits"][0]
    assert info["decoded_bytes"] == 12 * 3 * 30 * 30 and info["held_in_memory"]
    assert info["pixels_measured"] == 12 and info["notes"][0] == sizes


# --- bad input: one line, exit status 2, naming the file (and row) ----------------------------
@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("text_csv", ["text_cell.csv", "line 3", "'ink'"]),
        ("short_csv", ["short_row.csv", "line 2", "700"]),
        ("range_csv", ["out_of_range.csv", "line 4", "300"]),
        ("one_class_csv", ["one_class.csv", "'7'"]),
        ("truncated_idx", ["train-images-idx3-ubyte.gz", "truncated"]),
        ("corrupt_images", ["broken.png", "not a readable image"]),
        ("avif_images", ["photo.png", "an image in format AVIF", "expected PNG, JPEG"]),
        ("empty_npz", ["empty.npz", "no images"]),
        ("overflow_idx", ["train-images-idx3-ubyte", "truncated", "65536x16777216x16777216"]),
        ("empty_csv", ["empty.csv", "empty"]),
        ("empty_dir", ["empty_folder", "no images"]),
        ("count_idx", ["train-labels-idx1-ubyte", "5 labels", "6 images"]),
        ("missing", ["no_such_file.csv"]),
        ("bad_size", ["--image-size", "28by28"]),
        ("show_bad_split", ["--split", "valid", "train"]),
        ("fetch_unknown", ["cifar-100"]),
        ("fetch_unreachable", ["cannot download mnist", UNREACHABLE, "no_cache"]),
    ],
)
def test_bad_input_is_refused_in_one_line(results, case, fragments):
    refused(results[case], *fragments)


def test_bad_input_leaves_every_file_as_it_was(results, files, before):
    after = snapshot(files["root"])
    assert "x.png" not in after  # the refused `show` wrote nothing
    written = {"figures/pairs.png"}  # the one command asked to write a file
    assert {k: v for k, v in after.items() if k not in written} == before
    assert not [p for p in files["root"].rglob("*") if p.name.endswith(".tmp")]
