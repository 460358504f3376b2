"""Folders of image files, one folder per class.

Layouts:

- ``root/<class>/*.png`` (also jpg, jpeg, bmp, gif, tif, tiff, webp, pgm, ppm, pbm): one
  split, ``train``.
- Omniglot's ``root/<alphabet>/<character>/*.png``: class ``"alphabet/character"``, and the
  alphabet is the class's group.
- a root holding ``images_background/`` and/or ``images_evaluation/`` (Omniglot as
  distributed), or ``train/`` and ``test/``, each in one of the layouts above: one split each.

Symlinked class folders and image files are followed (a link looping back to a folder above
it is not); hidden files and folders are skipped; a folder without any image is skipped with a
note naming it.

Loading indexes a folder, it decodes nothing: each file's size and mode come from its header
(`siamnet.data.image_index.read_headers`), and a file that is no image of an accepted format is a
`DataError` naming it. The images are kept grayscale when every file is grey by its mode (grey
levels of any depth, a grey palette), else colour, and read at one size: `image_size`, or the
size they all share, or else a square of the median of their shorter sides (at most
`siamnet.presets.FOLDER_SIDE_CAP`), each fitted to it by `siamnet.images.read_image` (the shorter
side scaled, the longer cropped around the centre) as every inference command reads a file.

With ``cache="auto"`` (``--cache``) the images are decoded into memory, on a thread pool, when
they take at most `siamnet.data.cache.cache_limit` bytes at that size (``on``: always; ``off``:
never); otherwise every split holds an `siamnet.data.image_index.ImageFiles`, read per batch.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from siamnet.data.cache import check_cache, describe_limit, wants_cache
from siamnet.data.dataset import Dataset
from siamnet.data.image_index import Header, ImageFiles, read_headers, size_summary
from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import require_two_classes
from siamnet.errors import DataError
from siamnet.images import IMAGE_SUFFIXES as _SUFFIXES
from siamnet.images import check_image_size, hidden_name, walk_image_folders
from siamnet.presets import FOLDER_SIDE_CAP

IMAGE_SUFFIXES = tuple(sorted(_SUFFIXES))

#: Split folders, in the order the splits are returned, with what each is for.
SPLIT_FOLDERS = {
    "images_background": ("background", "training (Omniglot's 30 background alphabets)"),
    "images_evaluation": ("evaluation", "testing (Omniglot's 20 evaluation alphabets)"),
    "train": ("train", "training"),
    "val": ("val", "validation"),
    "valid": ("valid", "validation"),
    "validation": ("validation", "validation"),
    "test": ("test", "testing"),
}
_OMNIGLOT_SPLITS = ("images_background", "images_evaluation")

#: Folder names shown at most in a note.
_NAMES_SHOWN = 10

_LAYOUTS = (
    "expected <class>/<image> folders, Omniglot's <alphabet>/<character>/<image>, or "
    "images_background/ and images_evaluation/ (or train/ and test/) holding either"
)


def load_folder(
    path: str | os.PathLike[str], image_size: tuple[int, int] | None = None, cache: str = "auto"
) -> Dataset:
    """`Dataset` from a folder of images (see the module's layouts).

    Every split is uint8 ``[N, C, H, W]`` with C = 1 when every file of the folder is grey,
    else 3, at one size (`image_size` or the default of `training_size`); held in memory or
    kept on disk as `cache` says (``auto``, ``on``, ``off``).
    """
    root = Path(path)
    if image_size is not None:
        image_size = check_image_size(image_size)
    check_cache(cache)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    parts = _split_folders(root)
    folders = parts or [root]
    indexed = [index_split(folder) for folder in folders]
    headers = [h for split in indexed for h in split.headers]
    size, why = training_size(headers, image_size)
    channels = 1 if all(h.grey for h in headers) else 3
    held = wants_cache(len(headers) * channels * size[0] * size[1], cache)
    splits = {}
    roles = {}
    for folder, split in zip(folders, indexed, strict=True):
        name, role = (
            SPLIT_FOLDERS[folder.name] if parts else ("train", "all examples (no split folders)")
        )
        splits[name] = split.labeled(channels, size, why, held, cache)
        roles[name] = role
    return Dataset(str(root), splits, roles)


def load_split(
    folder: Path, image_size: tuple[int, int] | None = None, cache: str = "auto"
) -> LabeledImages:
    """One folder in layout ``<class>/<image>`` or ``<alphabet>/<character>/<image>``."""
    split = index_split(folder)
    size, why = training_size(split.headers, image_size)
    channels = 1 if all(h.grey for h in split.headers) else 3
    held = wants_cache(len(split.files) * channels * size[0] * size[1], check_cache(cache))
    return split.labeled(channels, size, why, held, cache)


class IndexedSplit:
    """One split's files, classes and headers, before it is given a size."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files, self.class_dirs, self.empty = find_images(folder)
        self.headers: list[Header] = read_headers(self.files, desc=f"indexing {folder.name}")

    def labeled(
        self, channels: int, size: tuple[int, int], why: str, held: bool, cache: str = "auto"
    ) -> LabeledImages:
        """The split as `LabeledImages` read at `size` with `channels`; decoded into memory
        when `held` (with a note when ``cache="auto"`` found it too large to hold)."""
        classes = sorted(set(self.class_dirs))
        lookup = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor([lookup[c] for c in self.class_dirs], dtype=torch.int64)
        files = ImageFiles(self.files, channels, size)
        images = files.decode(desc=f"decoding {self.folder.name}") if held else files
        split_classes = [c.split("/") for c in classes]
        groups = [p[0] for p in split_classes] if all(len(p) > 1 for p in split_classes) else None
        data = LabeledImages(images, labels, classes, groups, source=str(self.folder))
        notes = (
            _empty_note(self.empty),
            *_size_notes(self.headers, size, why),
            _disk_note(files) if cache == "auto" and not held else None,
        )
        notes = tuple(n for n in notes if n)
        if notes:
            data = replace(data, notes=notes)
        return require_two_classes(data)


def index_split(folder: Path) -> IndexedSplit:
    """The files of one split folder with their headers (nothing decoded)."""
    return IndexedSplit(folder)


def training_size(
    headers: list[Header], image_size: tuple[int, int] | None = None
) -> tuple[tuple[int, int], str]:
    """The size ``(H, W)`` a folder's images are read at, and why: `image_size` when given,
    else the size every image has, else a square of the median shorter side, at most
    `FOLDER_SIDE_CAP` pixels."""
    if image_size is not None:
        return tuple(image_size), "--image-size"  # type: ignore[return-value]
    sizes = {h.size for h in headers}
    if len(sizes) == 1:
        return next(iter(sizes)), "the size of every image"
    side = int(np.median([min(h.size) for h in headers]))
    if side > FOLDER_SIDE_CAP:
        return (FOLDER_SIDE_CAP, FOLDER_SIDE_CAP), (
            f"the median shorter side, {side}, capped at {FOLDER_SIDE_CAP}; --image-size to choose"
        )
    return (side, side), "the median shorter side; --image-size to choose"


def _disk_note(files: ImageFiles) -> str:
    """The note that a split too large to hold stays on disk, read per batch."""
    h, w = files.image_size
    return (
        f"images read from disk per batch ({files.nbytes / 2**30:.2f} GB decoded at {h}x{w}; "
        f"--cache auto holds at most {describe_limit()})"
    )


def _size_notes(headers: list[Header], size: tuple[int, int], why: str) -> list[str]:
    """Notes on the sizes found (a one-line summary when they differ) and on the images
    brought to `size`."""
    resized = sum(h.size != tuple(size) for h in headers)
    notes = []
    if len({h.size for h in headers}) > 1:
        notes.append(size_summary(headers))
    if resized:
        notes.append(
            f"resized {resized:,} of {len(headers):,} images to {size[0]}x{size[1]} ({why}; "
            "shorter side scaled, centre cropped)"
        )
    return notes


# --- finding files ---------------------------------------------------------------------------
def _split_folders(root: Path) -> list[Path]:
    """The split subfolders of `root`, in split order; empty when `root` is one split."""
    subdirs = {p.name: p for p in _subdirs(root)}
    if any(name in subdirs for name in _OMNIGLOT_SPLITS):
        return [subdirs[name] for name in _OMNIGLOT_SPLITS if name in subdirs]
    if "train" in subdirs and set(subdirs) <= set(SPLIT_FOLDERS):
        return [subdirs[name] for name in SPLIT_FOLDERS if name in subdirs]
    return []


def find_images(folder: Path) -> tuple[list[Path], list[str], list[str]]:
    """The image files under `folder`, sorted, each one's class: its folder's path relative
    to `folder` (``"7"``, ``"Greek/character03"``), and the folders holding no image at all
    (relative paths; the outermost of such folders only).

    Symlinked folders and files are followed (see `siamnet.images.walk_image_folders`); hidden
    files and folders are skipped.
    """
    files: list[Path] = []
    class_dirs: list[str] = []
    walked = list(walk_image_folders(folder))
    for dirpath, _, names in walked:
        if dirpath != folder:  # images directly in the root have no class
            files.extend(names)
            class_dirs.extend([dirpath.relative_to(folder).as_posix()] * len(names))
    if not files and walked[0][2]:
        raise DataError(
            f"{folder}: {len(walked[0][2])} images but no class folders; put each class's "
            f"images in a subfolder named after the class ({_LAYOUTS})"
        )
    if not files:
        raise DataError(f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)}); {_LAYOUTS}")
    return files, class_dirs, _empty_folders(folder, walked)


def _empty_folders(folder: Path, walked: list[tuple[Path, list[Path], list[Path]]]) -> list[str]:
    """The outermost folders below `folder` without an image anywhere inside, as relative
    paths, from `walked` (`walk_image_folders` of `folder`: parents before children)."""
    count: dict[Path, int] = {}
    for dirpath, subdirs, names in reversed(walked):  # children before their parents
        count[dirpath] = len(names) + sum(count[sub] for sub in subdirs)
    return [
        sub.relative_to(folder).as_posix()
        for dirpath, subdirs, _ in walked
        if dirpath == folder or count[dirpath]
        for sub in subdirs
        if not count[sub]
    ]


def _empty_note(empty: list[str]) -> str | None:
    """The note naming the folders skipped for holding no image, or None."""
    if not empty:
        return None
    shown = ", ".join(empty[:_NAMES_SHOWN]) + (" ..." if len(empty) > _NAMES_SHOWN else "")
    return f"skipped {len(empty):,} folder(s) without images: {shown}"


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not hidden_name(p.name))
