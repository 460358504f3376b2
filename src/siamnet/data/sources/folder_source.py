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

Images are decoded on a thread pool (Pillow releases the GIL while decoding) through
`siamnet.images.open_image` and `siamnet.images.to_8bit`, as every inference command reads them
(EXIF orientation, transparency onto white, 16-bit and float pixels scaled), so only its
accepted formats are opened and any failure is a `DataError` naming the file; they are kept
grayscale when every image is grayscale, and brought to one size: `image_size` or else the most
common.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamnet.data.dataset import Dataset
from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import require_two_classes, resize_images
from siamnet.errors import DataError
from siamnet.images import IMAGE_SUFFIXES as _SUFFIXES
from siamnet.images import check_image_size, hidden_name, open_image, to_8bit, walk_image_folders
from siamnet.progress import progress

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

#: Images copied into the result at once (bounds the temporary copies).
_STACK_CHUNK = 2048

#: Folder names shown at most in a note.
_NAMES_SHOWN = 10

_LAYOUTS = (
    "expected <class>/<image> folders, Omniglot's <alphabet>/<character>/<image>, or "
    "images_background/ and images_evaluation/ (or train/ and test/) holding either"
)


def load_folder(path: str | os.PathLike[str], image_size: tuple[int, int] | None = None) -> Dataset:
    """`Dataset` from a folder of images (see the module's layouts).

    Every split is uint8 ``[N, C, H, W]`` with C = 1 when all its images are grayscale, else 3,
    and ``(H, W)`` = `image_size` or the most common size among its images.
    """
    root = Path(path)
    if image_size is not None:
        image_size = check_image_size(image_size)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    parts = _split_folders(root)
    if not parts:
        return Dataset(
            str(root),
            {"train": load_split(root, image_size)},
            {"train": "all examples (no split folders)"},
        )
    splits: dict[str, LabeledImages | None] = {}
    roles: dict[str, str] = {}
    for folder in parts:
        name, role = SPLIT_FOLDERS[folder.name]
        splits[name] = load_split(folder, image_size)
        roles[name] = role
    return Dataset(str(root), splits, roles)


def load_split(folder: Path, image_size: tuple[int, int] | None = None) -> LabeledImages:
    """One folder in layout ``<class>/<image>`` or ``<alphabet>/<character>/<image>``."""
    files, class_dirs, empty = find_images(folder)
    classes = sorted(set(class_dirs))
    lookup = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([lookup[c] for c in class_dirs], dtype=torch.int64)
    arrays = decode_images(files, desc=folder.name)
    images, note = _stack(arrays, image_size)
    split_classes = [c.split("/") for c in classes]
    groups = [p[0] for p in split_classes] if all(len(p) > 1 for p in split_classes) else None
    data = LabeledImages(images, labels, classes, groups, source=str(folder))
    notes = tuple(n for n in (_empty_note(empty), note) if n)
    if notes:
        data = replace(data, notes=notes)
    return require_two_classes(data)


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


# --- decoding ----------------------------------------------------------------------------------
def decode_images(files: list[Path], desc: str = "images") -> list[np.ndarray]:
    """Each file as uint8 ``[H, W]`` (grayscale) or ``[H, W, 3]`` (colour), on a thread pool."""
    workers = min(16, (os.cpu_count() or 1) + 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        bar = progress(pool.map(read_image, files), total=len(files), desc=desc, unit="img")
        try:
            return list(bar)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()


def read_image(path: Path) -> np.ndarray:
    """uint8 ``[H, W]`` when the image is grayscale (a grey mode of any bit depth, a gray
    palette, or RGB with equal channels), else ``[H, W, 3]``; the first frame of an animation,
    read through `siamnet.images.to_8bit` as inference reads it. Any failure is a `DataError`
    naming the file."""
    with open_image(path) as img:
        return _to_array(to_8bit(img))


def _to_array(img: Image.Image) -> np.ndarray:
    """A mode ``L`` or ``RGB`` image as uint8 ``[H, W]`` (grey) or ``[H, W, 3]``."""
    if img.mode == "L":
        return np.asarray(img)
    rgb = np.asarray(img)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    return rgb


def _stack(
    arrays: list[np.ndarray | None], image_size: tuple[int, int] | None
) -> tuple[torch.Tensor, str | None]:
    """uint8 ``[N, C, H, W]`` at one size, and a note when some images were resized.

    Consumes `arrays` (each entry is dropped once copied) so that memory holds little more
    than one copy of the images.
    """
    shapes = [a.shape for a in arrays]
    color = any(len(s) == 3 for s in shapes)
    sizes = Counter(s[:2] for s in shapes)
    target = tuple(int(v) for v in image_size) if image_size else sizes.most_common(1)[0][0]
    out = torch.empty((len(arrays), 3 if color else 1, *target), dtype=torch.uint8)
    size_ids = {size: k for k, size in enumerate(sizes)}
    size_of = np.array([size_ids[s[:2]] for s in shapes])
    for k in range(len(size_ids)):
        index = np.flatnonzero(size_of == k)
        for start in range(0, len(index), _STACK_CHUNK):
            chunk = index[start : start + _STACK_CHUNK].tolist()
            batch = np.stack([_channels_first(arrays[i], color) for i in chunk])
            out[torch.tensor(chunk)] = resize_images(torch.from_numpy(batch), target)
            for i in chunk:
                arrays[i] = None
    resized = sum(n for size, n in sizes.items() if size != target)
    if not resized:
        return out, None
    found = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common())
    note = (
        f"resized {resized:,} of {len(arrays):,} images to {target[0]}x{target[1]} "
        f"(sizes found: {found})"
    )
    return out, note


def _channels_first(array: np.ndarray, color: bool) -> np.ndarray:
    """``[H, W]`` or ``[H, W, 3]`` -> ``[C, H, W]`` with C = 3 when `color`, else 1."""
    if array.ndim == 2:
        array = array[None]
        return np.repeat(array, 3, axis=0) if color else array
    return array.transpose(2, 0, 1)
