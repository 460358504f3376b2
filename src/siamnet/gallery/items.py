"""Images to put in a gallery: from a folder (labelled by sub-folder), an image file or a
data SPEC, read in chunks (`iter_gallery_items`) so that a build holds one chunk of images at a
time; `content_hashes` tells images apart by their pixels."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from siamnet.errors import DataError
from siamnet.images import IMAGE_SUFFIXES, list_image_files, match_channels, read_images
from siamnet.models.embed import chunk_length

#: Bytes of each image's content hash (the start of the sha256 of its pixels).
CONTENT_BYTES = 16


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
    resize: str = "crop",
) -> GalleryItems:
    """Images from a folder, an image file or a data SPEC, at the model's channels and size,
    all at once (`iter_gallery_items` reads them a chunk at a time)."""
    parts = list(iter_gallery_items(source, channels, size, invert, split, resize=resize))
    return GalleryItems(
        images=torch.cat([p.images for p in parts]),
        labels=[label for p in parts for label in p.labels],
        names=[name for p in parts for name in p.names],
        failures=[f for p in parts for f in p.failures],
    )


def iter_gallery_items(
    source: str | os.PathLike[str],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    split: str | None = None,
    chunk: int | None = None,
    resize: str = "crop",
) -> Iterator[GalleryItems]:
    """Images from a folder, an image file or a data SPEC, `chunk` at a time (default:
    `siamnet.models.embed.chunk_length`), at the model's channels and size (image files
    brought to it as `resize` says: the checkpoint's ``spec.resize``).

    A folder is read recursively; an image in a sub-folder is labelled by its sub-folder path
    (``Greek/character03``), one at the top is unlabelled. Any other `source` is a data SPEC
    (``digits``, ``mnist``, a .csv or .npz file); its images are named ``SPEC:SPLIT:INDEX``
    and labelled by class, from every split or only `split`. The folder is listed (and the
    SPEC checked) before the first chunk is yielded.
    """
    step = chunk or chunk_length((channels, *size))
    p = Path(source)
    if p.is_dir():
        files = list_image_files(p, recursive=True)
        if not files:
            raise DataError(f"{p}: no image files in this folder")
        return _items_from_files(files, p, channels, size, invert, step, resize)
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return _items_from_files([p], None, channels, size, invert, step, resize)
    return _items_from_spec(str(source), channels, size, invert, split, step)


def _items_from_files(
    files: list[Path],
    root: Path | None,
    channels: int,
    size: tuple[int, int],
    invert: bool,
    step: int,
    resize: str,
) -> Iterator[GalleryItems]:
    for i in range(0, len(files), step):
        chunk = files[i : i + step]
        images, ok, failures = read_images(chunk, channels, size, invert, resize=resize)
        labels: list[str | None] = []
        for f in ok:
            folder = f.parent.relative_to(root).as_posix() if root is not None else "."
            labels.append(None if folder == "." else folder)
        names = [str(f) for f in ok]
        yield GalleryItems(images, labels, names, [(str(f), m) for f, m in failures])


def _items_from_spec(
    spec: str, channels: int, size: tuple[int, int], invert: bool, split: str | None, step: int
) -> Iterator[GalleryItems]:
    from siamnet.data.registry import load_dataset

    dataset = load_dataset(spec, image_size=size)
    parts = {name: data for name, data in dataset.splits.items() if data is not None}
    if split is not None:
        if split not in parts:
            raise DataError(f"{spec}: no split named {split!r}; splits are {', '.join(parts)}")
        parts = {split: parts[split]}
    if not any(len(data) for data in parts.values()):
        raise DataError(f"{spec}: no images")
    return _spec_chunks(spec, parts, channels, invert, step)


def _spec_chunks(
    spec: str, parts: dict, channels: int, invert: bool, step: int
) -> Iterator[GalleryItems]:
    for name, data in parts.items():
        for i in range(0, len(data), step):
            images = match_channels(data.images[i : i + step], channels)
            labels = [data.classes[k] for k in data.labels[i : i + step].tolist()]
            names = [f"{spec}:{name}:{j}" for j in range(i, i + len(images))]
            yield GalleryItems(255 - images if invert else images, labels, names)


def content_hashes(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, CONTENT_BYTES]``: the start of the sha256 of each uint8 image ``[C, H, W]``
    of ``[N, C, H, W]`` (its shape included), equal for equal pixels."""
    x = images.contiguous().numpy()
    shape = repr(tuple(x.shape[1:])).encode()
    rows = [hashlib.sha256(shape + row.tobytes()).digest()[:CONTENT_BYTES] for row in x]
    if not rows:
        return torch.zeros(0, CONTENT_BYTES, dtype=torch.uint8)
    return torch.frombuffer(bytearray(b"".join(rows)), dtype=torch.uint8).view(-1, CONTENT_BYTES)
