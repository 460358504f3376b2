"""Helpers of the Python API that the command line has no verb for: `embed`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from siamnet.checkpoint import Checkpoint, load_checkpoint
from siamnet.data.in_memory import from_arrays
from siamnet.data.labeled import LabeledImages
from siamnet.errors import ArgumentError, DataError
from siamnet.images import match_channels, read_images
from siamnet.infer import model_of
from siamnet.models.embed import embed_images
from siamnet.models.siamese import SiameseNet


def embed(
    source: Checkpoint | SiameseNet | str | os.PathLike[str],
    images: Any,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Embeddings float32 ``[N, D]`` (on the CPU) of `images`: uint8 ``[N, C, H, W]`` (or
    numpy, or floats in 0..1), a `LabeledImages`, or image file paths (read at the model's
    input size). `source` is a checkpoint, a run folder or file, or a `SiameseNet`.

    >>> import siamnet
    >>> model = siamnet.load_checkpoint("runs/digits")
    >>> vectors = siamnet.embed(model, ["a.png", "b.png"])       # [2, D]
    >>> same = (vectors[0] - vectors[1]).norm() < 0.5
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint(source)
    model = model_of(source)
    spec = source.spec if isinstance(source, Checkpoint) else None
    size = tuple(spec.image_size) if spec is not None else None
    resize = spec.resize if spec is not None else "crop"
    pixels = as_images(images, int(model.normalizer.mean.shape[1]), size, resize)
    return embed_images(model, pixels, batch_size=batch_size).float().cpu()


def as_images(
    images: Any, channels: int, size: tuple[int, int] | None, resize: str = "crop"
) -> torch.Tensor:
    """`images` as uint8 ``[N, C, H, W]`` with `channels`; files are read at `size`, brought
    to it as `resize` says (`siamnet.images.RESIZE_MODES`: the checkpoint's own)."""
    if isinstance(images, LabeledImages):
        return match_channels(images.images, channels)
    if isinstance(images, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in images):
        if size is None:
            raise ArgumentError("embedding image files needs the input size: pass a checkpoint")
        pixels, _, failures = read_images(list(images), channels, size, resize=resize)
        if failures:
            raise DataError(failures[0][1])
        return pixels
    data = from_arrays(images, torch.zeros(len(images), dtype=torch.int64))
    return match_channels(data.images, channels)
