"""Loaders, one per file format, each returning `LabeledImages`; and the pieces they share.

`siamnet.data.registry.load_dataset` picks the loader from what a SPEC is; these modules do the
reading and the checking: ``csv_source``, ``idx_source``, ``folder_source``, ``npz_source``,
``builtin``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from siamnet.data.image_index import ImageFiles
from siamnet.data.labeled import LabeledImages
from siamnet.errors import DataError
from siamnet.images import crop_box

#: Images resized at once when a whole data set is resized (bounds the float32 temporaries).
_RESIZE_CHUNK = 4096


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of `path`, decompressed when its name ends in ``.gz``.

    A truncated or corrupt gzip file is a `DataError` that names the file.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    if p.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DataError(
            f"{p}: truncated gzip file (it ends before the end of the compressed data); "
            "download or copy it again"
        ) from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{p}: not a valid gzip file ({exc})") from exc


def classes_from_values(values: np.ndarray) -> tuple[torch.Tensor, list[str]]:
    """Labels ``0..K-1`` (int64 ``[N]``) and class names from raw label values ``[N]``.

    Class ``i`` is the ``i``-th of the sorted unique values (numeric order for numbers), named
    by its text (``"7"``, ``"cat"``).
    """
    unique, inverse = np.unique(values, return_inverse=True)
    names = [_name(v) for v in unique.tolist()]
    return torch.from_numpy(inverse.reshape(-1).astype(np.int64)), names


def _name(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def require_two_classes(data: LabeledImages) -> LabeledImages:
    """`data` unchanged, or a `DataError` when it holds fewer than two classes.

    A Siamese network learns from pairs of different classes, so one class is not training data.
    """
    present = torch.unique(data.labels)
    if present.numel() < 2:
        only = data.classes[int(present[0])] if present.numel() else "none"
        raise DataError(
            f"{data.source}: only one class ({only!r}) in {len(data)} examples; at least two "
            "classes are needed"
        )
    return data


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> uint8 ``[N, C, *size]``: the centre of the target's aspect
    (`centre_crop`, as image files are read) resized bilinearly, antialiased when shrinking.

    Works in chunks so that the float copy stays small for large data sets.
    """
    if tuple(images.shape[2:]) == tuple(size):
        return images
    images = centre_crop(images, size)
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        resized = F.interpolate(
            chunk, size=size, mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def centre_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centred region of uint8 ``[N, C, H, W]`` that has the aspect of ``size = (H, W)``
    (`siamnet.images.crop_box`, in whole pixels, at least one): a view, the images themselves when
    the aspect is already the target's."""
    h, w = images.shape[2:]
    left, top, right, bottom = crop_box((w, h), size)
    crop_w, crop_h = max(1, round(right - left)), max(1, round(bottom - top))
    if (crop_w, crop_h) == (w, h):
        return images
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    return images[:, :, top : top + crop_h, left : left + crop_w]


def resize_labeled(data: LabeledImages, size: tuple[int, int] | None) -> LabeledImages:
    """`data` with its images resized to `size` ``(H, W)`` and a note saying so; unchanged when
    `size` is None or already the size."""
    if size is None or data.image_size == tuple(size):
        return data
    h, w = data.image_size
    if isinstance(data.images, ImageFiles):  # read at the new size when used
        return replace(data, images=data.images.at_size(tuple(size)))
    cropped = centre_crop(data.images[:1], size).shape[2:] != (h, w)
    how = "centre cropped to its aspect, bilinear" if cropped else "bilinear"
    note = f"resized all {len(data):,} images from {h}x{w} to {size[0]}x{size[1]} ({how})"
    return replace(data, images=resize_images(data.images, size), notes=(*data.notes, note))
