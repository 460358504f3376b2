"""Embedding many images with a model, in batches sized for the device; `embed_chunks` and
`embed_files` embed a stream of images chunk by chunk, so that memory is bounded by one chunk
rather than by the number of images."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from siamnet.errors import ArgumentError
from siamnet.images import read_images
from siamnet.models.siamese import SiameseNet
from siamnet.progress import progress


def embedding_batch_size(image_size: tuple[int, int], device: torch.device | str) -> int:
    """Images per forward pass when embedding: 512 on a GPU; on a CPU, the largest power of two
    up to 512 with at most 2**17 (131,072) pixels per batch (128 at 28×28, 8 at 105×105).

    Larger CPU batches are no faster (they fall out of cache) and their activations cost
    memory: 512 images of 105×105 through Koch's first layer alone take 1.2 GB."""
    if torch.device(device).type != "cpu":
        return 512
    pixels = max(1, image_size[0] * image_size[1])
    return max(1, min(512, 2 ** int(math.log2(max(1, 2**17 // pixels)))))


def channels_last_for(model: SiameseNet, device: torch.device) -> torch.memory_format:
    """The memory layout to embed in: channels-last on CPU and CUDA for a model with
    convolutions (the model's weights are converted in place, once; values are unchanged),
    which makes embedding 2-4× faster on a CPU (bench/RESULTS.md, "One-shot evaluation
    speed"); the contiguous layout elsewhere (MPS) and for models without 4-d weights."""
    if device.type not in ("cpu", "cuda"):
        return torch.contiguous_format
    weights = [p for p in model.parameters() if p.dim() == 4]
    if not weights:
        return torch.contiguous_format
    if not all(p.is_contiguous(memory_format=torch.channels_last) for p in weights):
        model.to(memory_format=torch.channels_last)
    return torch.channels_last


@torch.no_grad()
def embed_images(
    model: SiameseNet,
    images: torch.Tensor,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Embeddings ``[N, D]`` (float32, on `device`) of uint8 images ``[N, C, H, W]``,
    `batch_size` at a time (default: `embedding_batch_size`)."""
    device = device or next(model.parameters()).device
    if batch_size is not None and batch_size < 1:
        raise ArgumentError(f"--batch-size {batch_size}: must be at least 1")
    batch_size = batch_size or embedding_batch_size(tuple(images.shape[-2:]), device)
    was_training = model.training
    model.eval()
    layout = channels_last_for(model, torch.device(device))
    chunks = [
        model.embed(
            images[i : i + batch_size]
            .to(device, non_blocking=True)
            .contiguous(memory_format=layout)
        ).float()
        for i in progress(range(0, len(images), batch_size), desc="embedding", unit="batch")
    ]
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, 0, device=device)


#: Bytes of uint8 images read and embedded at a time by a streamed embedding (32 MiB).
CHUNK_BYTES = 2**25


def chunk_length(image_shape: Sequence[int], batch_size: int = 1) -> int:
    """Images ``[C, H, W]`` per chunk of a streamed embedding: `CHUNK_BYTES` of them, rounded
    down to whole batches of `batch_size` (at least one batch)."""
    per_image = max(1, math.prod(image_shape))
    batches = max(1, CHUNK_BYTES // (per_image * max(1, batch_size)))
    return batches * max(1, batch_size)


@torch.no_grad()
def embed_chunks(
    model: SiameseNet,
    chunks: Iterable[torch.Tensor],
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> Iterator[torch.Tensor]:
    """Embeddings float32 ``[n, D]`` (on the CPU) of each uint8 chunk ``[n, C, H, W]`` of
    `chunks`, yielded as each chunk is read: only one chunk of images is held at a time."""
    for chunk in chunks:
        if len(chunk):
            yield embed_images(model, chunk, batch_size=batch_size, device=device).float().cpu()
        else:
            yield torch.zeros(0, 0)


def embed_files(
    model: SiameseNet,
    paths: Sequence[str | os.PathLike[str]],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    chunk: int | None = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]]:
    """Image files read (`siamnet.images.read_images`) and embedded `chunk` at a time
    (default: `chunk_length`): for each chunk, embeddings float32 ``[n, D]`` (CPU) of the files
    that could be read, their paths, and ``(path, message)`` for those that could not."""
    step = chunk or chunk_length((channels, *size), batch_size or 1)
    for i in range(0, len(paths), step):
        images, ok, failures = read_images(paths[i : i + step], channels, size, invert)
        (embeddings,) = embed_chunks(model, [images], batch_size, device)
        yield embeddings, ok, failures
