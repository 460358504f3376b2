"""Reading image files for a trained model: any format Pillow reads, converted to the model's
channels (``L`` or ``RGB``) and size (bilinear resize), as uint8 ``[C, H, W]``.

Images are taken as they are: a black-on-white drawing is not inverted to match white-on-black
training data (MNIST, the built-in digits) unless asked with ``invert=True`` (``--invert`` on the
command line).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from siamnet.errors import DataError
from siamnet.progress import progress

#: File name endings read as images when a folder is listed.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
)

_MODES = {1: "L", 3: "RGB"}


def read_image(
    path: str | os.PathLike[str], channels: int, size: tuple[int, int], invert: bool = False
) -> torch.Tensor:
    """The image file at `path` as uint8 ``[channels, H, W]`` with ``size = (H, W)``."""
    p = Path(path)
    try:
        with Image.open(p) as image:
            return _to_tensor(image, channels, size, invert)
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such image file") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{p}: a folder, expected an image file") from exc
    except _DECODE_ERRORS as exc:
        raise DataError(f"{p}: not a readable image ({_reason(exc)})") from exc


def read_image_bytes(
    data: bytes, channels: int, size: tuple[int, int], invert: bool = False, name: str = "image"
) -> torch.Tensor:
    """Encoded image bytes (an upload) as uint8 ``[channels, H, W]``; `name` is used in errors."""
    if not data:
        raise DataError(f"{name}: empty, expected an image file's bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _to_tensor(image, channels, size, invert)
    except _DECODE_ERRORS as exc:
        raise DataError(f"{name}: not a readable image ({_reason(exc)})") from exc


def read_images(
    paths: Sequence[str | os.PathLike[str]],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    desc: str = "reading images",
) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """Read many files; unreadable ones are collected, not raised.

    Returns uint8 images ``[N, C, H, W]`` of the files that could be read, their paths, and
    ``(path, message)`` for each file that could not. A progress bar on stderr shows `desc`.
    """
    out = np.empty((len(paths), channels, size[0], size[1]), dtype=np.uint8)
    ok: list[Path] = []
    failures: list[tuple[Path, str]] = []
    for path in progress(paths, desc=desc, unit="image"):
        try:
            out[len(ok)] = read_image(path, channels, size, invert).numpy()
        except DataError as exc:
            failures.append((Path(path), str(exc)))
            continue
        ok.append(Path(path))
    return torch.from_numpy(out[: len(ok)].copy()), ok, failures


def list_image_files(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Image files inside `folder` (by name ending), sorted; with `recursive`, in its
    sub-folders too. Hidden files and folders are skipped."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: expected a folder of images, found {_what(d)}")
    found = d.rglob("*") if recursive else d.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(d).parts)
    )


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` with 1 or 3 channels converted to `channels` (grey is repeated;
    colour becomes luminance ``0.299 R + 0.587 G + 0.114 B``, as Pillow's ``L`` mode)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        grey = ((images.to(torch.int32) * weights).sum(1, keepdim=True) + 500) // 1000
        return grey.to(torch.uint8)
    raise DataError(f"cannot convert {have}-channel images to {channels} channels")


def class_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """The sub-folders of `folder` (one per class), sorted by name; hidden ones skipped."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: expected a folder with one sub-folder per class, found {_what(d)}")
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_support_folder(
    folder: str | os.PathLike[str], channels: int, size: tuple[int, int], invert: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path], list[tuple[Path, str]]]:
    """A folder with one sub-folder of images per class (K-shot support, or a labelled gallery).

    Returns images uint8 ``[N, C, H, W]``, labels int64 ``[N]`` in ``0..K-1``, the K class names
    (sub-folder names, sorted), the paths read, and ``(path, message)`` for unreadable files.
    A class whose every image is unreadable is dropped (its failures are reported).
    """
    root = Path(folder)
    classes = class_folders(root)
    if not classes:
        loose = list_image_files(root)
        found = f"{len(loose)} loose image files" if loose else "no sub-folders"
        raise DataError(f"{root}: expected one sub-folder of images per class, found {found}")
    paths: list[Path] = []
    owners: list[int] = []
    for k, sub in enumerate(classes):
        files = list_image_files(sub)
        paths += files
        owners += [k] * len(files)
    if not paths:
        raise DataError(f"{root}: {len(classes)} class folders but no image files in them")
    images, ok, failures = read_images(paths, channels, size, invert)
    owner_of = dict(zip(paths, owners, strict=True))
    kept = sorted({owner_of[p] for p in ok})
    new_id = {k: i for i, k in enumerate(kept)}
    labels = torch.tensor([new_id[owner_of[p]] for p in ok], dtype=torch.int64)
    return images, labels, [classes[k].name for k in kept], ok, failures


def _to_tensor(
    image: Image.Image, channels: int, size: tuple[int, int], invert: bool
) -> torch.Tensor:
    """A Pillow image -> uint8 ``[channels, H, W]`` (EXIF orientation applied)."""
    if channels not in _MODES:
        raise DataError(f"expected 1 or 3 image channels, got {channels}")
    image.load()
    image = ImageOps.exif_transpose(image)
    image = image.convert(_MODES[channels])
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8).reshape(height, width, channels)
    if invert:
        array = 255 - array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


_DECODE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "Pillow does not recognise the format"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _what(path: Path) -> str:
    if not path.exists():
        return "nothing there"
    return "a file" if path.is_file() else "something else"
