"""IDX files, the format MNIST and Fashion-MNIST are distributed in.

An images file (``train-images-idx3-ubyte[.gz]``, magic ``0x00000803``: uint8, 3 dimensions
``[N, H, W]``) goes with a labels file (``train-labels-idx1-ubyte[.gz]``, magic ``0x00000801``:
uint8 ``[N]``). The ``train`` files are the training split, the ``t10k`` files the test split.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch

from siamnet.data.dataset import Dataset
from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import (
    classes_from_values,
    read_bytes,
    require_two_classes,
    resize_labeled,
)
from siamnet.errors import DataError
from siamnet.images import check_image_size

#: ``<prefix>-images-idx3-ubyte`` (or ``<prefix>-images.idx3-ubyte``), optionally ``.gz``.
_IMAGES_NAME = re.compile(r"^(?P<prefix>.+)-images(?P<sep>[-.])idx3-ubyte(?P<gz>\.gz)?$")
_LABELS_NAME = re.compile(r"^(?P<prefix>.+)-labels(?P<sep>[-.])idx1-ubyte(?P<gz>\.gz)?$")

#: IDX magic numbers: two zero bytes, the type code (0x08 = uint8), the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

#: Fashion-MNIST's class names, by label 0..9.
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def find_idx_files(folder: Path) -> list[Path]:
    """The IDX images files in `folder` (not its subfolders): ``train`` first, then ``t10k``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _IMAGES_NAME.match(p.name) and p.is_file()]
    by_prefix: dict[str, Path] = {}
    for p in sorted(found, key=lambda p: p.name.endswith(".gz")):  # raw before .gz
        by_prefix.setdefault(_IMAGES_NAME.match(p.name)["prefix"], p)
    return sorted(by_prefix.values(), key=_split_order)


def load_idx(path: str | os.PathLike[str], image_size: tuple[int, int] | None = None) -> Dataset:
    """`Dataset` from one IDX images file (or its labels file) or a folder of IDX files.

    Splits are named by file, ``train`` (training) before ``test`` (from ``t10k``, testing);
    every image is uint8 ``[1, H, W]``, resized to `image_size` ``(H, W)`` when given.
    """
    path = Path(path)
    size = None if image_size is None else check_image_size(image_size)
    images_files = _images_files(path)
    splits: dict[str, LabeledImages | None] = {}
    roles: dict[str, str] = {}
    for images_file in images_files:
        name, role = _split_name(images_file)
        if name in splits:
            name = images_file.name
        splits[name] = resize_labeled(_load_pair(images_file), size)
        roles[name] = role
    return Dataset(str(path), splits, roles)


# --- finding files ---------------------------------------------------------------------------
def _images_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = find_idx_files(path)
        if not files:
            raise DataError(
                f"{path}: no IDX images files (*-images-idx3-ubyte[.gz]) in this folder"
            )
        return files
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if _IMAGES_NAME.match(path.name):
        return [path]
    labels = _LABELS_NAME.match(path.name)
    if labels:
        sep = labels["sep"]
        for gz in (labels["gz"] or "", ".gz" if not labels["gz"] else ""):
            candidate = path.with_name(f"{labels['prefix']}-images{sep}idx3-ubyte{gz}")
            if candidate.is_file():
                return [candidate]
        raise DataError(
            f"{path}: a labels file without its images file "
            f"({labels['prefix']}-images{sep}idx3-ubyte[.gz]) beside it"
        )
    raise DataError(
        f"{path}: not an IDX images file; expected a name like train-images-idx3-ubyte[.gz]"
    )


def _labels_file(images_file: Path) -> Path:
    """The labels file beside `images_file` (same prefix; compressed or not)."""
    match = _IMAGES_NAME.match(images_file.name)
    assert match is not None
    stem = f"{match['prefix']}-labels{match['sep']}idx1-ubyte"
    gz = match["gz"] or ""
    for suffix in (gz, ".gz" if not gz else ""):
        candidate = images_file.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{images_file}: no labels file beside it; expected {stem}{gz} in {images_file.parent}"
    )


def _split_name(images_file: Path) -> tuple[str, str]:
    """``("train", "training")``, ``("test", "testing")`` or the file's own prefix."""
    prefix = _IMAGES_NAME.match(images_file.name)["prefix"]
    low = prefix.lower()
    if low == "train" or low.endswith("train"):
        return "train", "training"
    if low == "t10k" or low.endswith(("t10k", "test")):
        return "test", "testing"
    return prefix, "examples"


def _split_order(images_file: Path) -> tuple[int, str]:
    name = _split_name(images_file)[0]
    return {"train": 0, "test": 1}.get(name, 2), images_file.name


# --- reading -----------------------------------------------------------------------------------
def _load_pair(images_file: Path) -> LabeledImages:
    """The images of `images_file` with the labels of its labels file."""
    labels_file = _labels_file(images_file)
    images = read_idx(images_file, IMAGES_MAGIC)
    labels = read_idx(labels_file, LABELS_MAGIC)
    if len(labels) != len(images):
        raise DataError(
            f"{labels_file}: {len(labels):,} labels but {images_file.name} has {len(images):,} "
            "images; expected one label per image"
        )
    label_ids, classes = classes_from_values(labels)
    if _is_fashion(images_file) and labels.max() < len(FASHION_CLASSES):
        classes = [FASHION_CLASSES[int(v)] for v in np.unique(labels)]
    data = LabeledImages(
        torch.from_numpy(images).unsqueeze(1), label_ids, classes, source=str(images_file)
    )
    return require_two_classes(data)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file: ``[N, H, W]`` for images, ``[N]`` for labels.

    Checks the magic number (type uint8 and the number of dimensions) and that the file holds
    exactly the bytes its header promises.
    """
    data = read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    kind = "images (idx3)" if magic == IMAGES_MAGIC else "labels (idx1)"
    if len(data) < header:
        raise DataError(
            f"{path}: {len(data)} bytes, shorter than an IDX {kind} header ({header} bytes)"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: magic number 0x{found:08x}; expected 0x{magic:08x} for IDX {kind} files"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    shape = "x".join(map(str, dims))
    expected = header + math.prod(dims)  # Python ints: no wrap-around for any header
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path}: {what}: the header promises {shape} values ({expected:,} bytes) but the "
            f"file has {len(data):,} bytes"
        )
    if dims[0] == 0:
        raise DataError(f"{path}: the file holds no {kind.split()[0]}")
    if 0 in dims[1:]:
        raise DataError(
            f"{path}: the header gives images of {'x'.join(map(str, dims[1:]))} pixels; "
            "expected a height and width of at least 1"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _is_fashion(images_file: Path) -> bool:
    return "fashion" in images_file.name.lower() or "fashion" in images_file.parent.name.lower()
