"""Embedding many images with a model, in batches sized for the device."""

from __future__ import annotations

import math

import torch

from siamnet.errors import ArgumentError
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
