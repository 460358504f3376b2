"""Images to put in a gallery: from a folder (labelled by sub-folder), an image file or a
data SPEC."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from siamnet.errors import DataError
from siamnet.images import IMAGE_SUFFIXES, list_image_files, match_channels, read_images


@dataclass
class GalleryItems:
    """Images to add to a gallery, uint8 ``[N, C, H, W]``, with a label (or None) and a name
    each, and ``(name, message)`` for every file that could not be read."""

    images: torch.Tensor
    labels: list[str | None]
    names: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)


def read_gallery_items(
    source: str | os.PathLike[str],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    split: str | None = None,
) -> GalleryItems:
    """Images from a folder, an image file or a data SPEC, at the model's channels and size.

    A folder is read recursively; an image in a sub-folder is labelled by its sub-folder path
    (``Greek/character03``), one at the top is unlabelled. Any other `source` is a data SPEC
    (``digits``, ``mnist``, a .csv or .npz file); its images are named ``SPEC:SPLIT:INDEX``
    and labelled by class, from every split or only `split`.
    """
    p = Path(source)
    if p.is_dir():
        files = list_image_files(p, recursive=True)
        if not files:
            raise DataError(f"{p}: no image files in this folder")
        return _items_from_files(files, p, channels, size, invert)
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return _items_from_files([p], None, channels, size, invert)
    return _items_from_spec(str(source), channels, size, invert, split)


def _items_from_files(
    files: list[Path], root: Path | None, channels: int, size: tuple[int, int], invert: bool
) -> GalleryItems:
    images, ok, failures = read_images(files, channels, size, invert)
    labels: list[str | None] = []
    for f in ok:
        folder = f.parent.relative_to(root).as_posix() if root is not None else "."
        labels.append(None if folder == "." else folder)
    return GalleryItems(images, labels, [str(f) for f in ok], [(str(f), m) for f, m in failures])


def _items_from_spec(
    spec: str, channels: int, size: tuple[int, int], invert: bool, split: str | None
) -> GalleryItems:
    from siamnet.data.registry import load_dataset

    dataset = load_dataset(spec, image_size=size)
    parts = {name: data for name, data in dataset.splits.items() if data is not None}
    if split is not None:
        if split not in parts:
            raise DataError(f"{spec}: no split named {split!r}; splits are {', '.join(parts)}")
        parts = {split: parts[split]}
    images, labels, names = [], [], []
    for name, data in parts.items():
        images.append(match_channels(data.images, channels))
        labels += [data.classes[i] for i in data.labels.tolist()]
        names += [f"{spec}:{name}:{i}" for i in range(len(data))]
    if not images:
        raise DataError(f"{spec}: no images")
    stacked = torch.cat(images)
    return GalleryItems(255 - stacked if invert else stacked, labels, names)
