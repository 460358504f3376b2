"""`load_dataset(SPEC)`: pick the loader from what a SPEC is, and return its splits.

A SPEC is a built-in name (``digits``; ``glyphs``, rendered from matplotlib's fonts on first
use), a named data set fetched on first use (``mnist``, ``fashion-mnist``, ``omniglot``) or a
path: a ``.csv`` file, an ``.npz`` file, IDX files (a file or a folder of them), or a folder of
images (``<class>/*.png`` or Omniglot's ``<alphabet>/<character>/*.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

from siamnet.data.dataset import Dataset, single_split
from siamnet.errors import DataError

__all__ = ["NAMED_DATASETS", "Dataset", "load_dataset", "load_path", "single_split"]

#: Data sets known by name, with a line on what each is.
NAMED_DATASETS = {
    "digits": "scikit-learn's bundled handwritten digits (1,797 images, 10 classes), 28x28",
    "glyphs": "Omniglot-like characters rendered from matplotlib's fonts on first use, "
    "background and evaluation alphabets, 28x28",
    "mnist": "MNIST handwritten digits (70,000 images, 10 classes), 28x28, fetched on first use",
    "fashion-mnist": "Fashion-MNIST clothing (70,000 images, 10 classes), 28x28, fetched on "
    "first use or read from Debian's dataset-fashion-mnist package",
    "omniglot": "Omniglot characters (32,460 images, 1,623 classes in 50 alphabets), 105x105, "
    "fetched on first use",
}


def load_dataset(
    spec: str, image_size: tuple[int, int] | None = None, cache: str = "auto"
) -> Dataset:
    """Load SPEC (a built-in name or a path); `image_size` ``(H, W)`` resizes every image.
    `cache` (``auto``, ``on``, ``off``) says whether a folder of images is decoded into memory
    or read per batch (`siamnet.data.cache`); other formats are always in memory."""
    if spec is None or not str(spec).strip():
        raise DataError(
            "empty data SPEC: give a built-in name (digits, glyphs, mnist, "
            "fashion-mnist, omniglot) or a path"
        )
    spec = str(spec)
    key = spec.lower()
    path = Path(os.path.expanduser(spec))
    if key == "digits" and not path.exists():
        from siamnet.data.sources.builtin import load_digits

        return load_digits(image_size)
    if key == "glyphs" and not path.exists():
        from siamnet.data.sources.glyphs import load_glyphs

        return load_glyphs(image_size)
    if key in NAMED_DATASETS and not path.exists():
        from siamnet.data.fetch import dataset_dir

        folder = dataset_dir(key)
        if key == "omniglot":
            from siamnet.data.sources.folder_source import load_folder

            return _renamed(load_folder(folder, image_size, cache), spec)
        from siamnet.data.sources.idx_source import load_idx

        return _renamed(load_idx(folder, image_size), spec)
    if not path.exists():
        names = ", ".join(NAMED_DATASETS)
        raise DataError(f"{spec}: no such file or folder, and not a data set name ({names})")
    return load_path(path, image_size, cache)


def load_path(
    path: Path, image_size: tuple[int, int] | None = None, cache: str = "auto"
) -> Dataset:
    """Load a file or folder, choosing the loader by what it is."""
    name = path.name.lower()
    if path.is_dir():
        from siamnet.data.sources.idx_source import find_idx_files, load_idx

        if find_idx_files(path):
            return load_idx(path, image_size)
        from siamnet.data.sources.folder_source import load_folder

        return load_folder(path, image_size, cache)
    if name.endswith((".csv", ".csv.gz")):
        from siamnet.data.sources.csv_source import load_csv

        return single_split(str(path), load_csv(path, image_size))
    if name.endswith(".npz"):
        from siamnet.data.sources.npz_source import load_npz

        return single_split(str(path), load_npz(path, image_size))
    if "idx" in name and "ubyte" in name:
        from siamnet.data.sources.idx_source import load_idx

        return load_idx(path, image_size)
    raise DataError(
        f"{path}: unknown data format; expected a .csv or .npz file, IDX files "
        "(*-images-idx3-ubyte[.gz]) or a folder of images"
    )


def _renamed(dataset: Dataset, name: str) -> Dataset:
    return Dataset(name, dataset.splits, dataset.roles)
