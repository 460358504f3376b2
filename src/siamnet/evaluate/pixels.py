"""Nearest neighbour on raw pixels: the floor a learned metric has to beat.

Each image is its own embedding (its pixel values 0..255, flattened) and a query goes to the
support image nearest in Euclidean distance (with K shots, the class of the smallest mean
distance). `pixel_few_shot_table` scores the same N-way K-shot episodes as `few_shot_table`
draws for a model on the same data and seed, so the two tables compare row by row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from siamnet.data.labeled import LabeledImages
from siamnet.evaluate.fewshot import DEFAULT_SHOTS, DEFAULT_WAYS, FewShotResult, few_shot_table
from siamnet.models.heads import DistanceHead
from siamnet.models.siamese import SiameseNet

#: What the rows of `pixel_few_shot_table` are, in words (for a report).
PIXEL_BASELINE = "nearest neighbour on raw pixels (Euclidean distance)"


#: Images read at once from disk for their pixels.
_READ_CHUNK = 256


def pixel_model() -> SiameseNet:
    """A 'model' whose embedding is the image itself, scored by minus the Euclidean distance."""
    return SiameseNet(torch.nn.Identity(), DistanceHead())


def pixel_embeddings(images: torch.Tensor) -> torch.Tensor:
    """float32 ``[N, C·H·W]``: the pixel values of uint8 `images` ``[N, C, H, W]`` (images kept
    on disk, `siamnet.data.image_index.ImageFiles`, are read a chunk at a time)."""
    if not isinstance(images, torch.Tensor):
        step = _READ_CHUNK
        return torch.cat(
            [images[i : i + step].flatten(1).float() for i in range(0, len(images), step)]
        )
    return images.flatten(1).float()


def pixel_few_shot_table(
    data: LabeledImages,
    *,
    ways: Sequence[int] = DEFAULT_WAYS,
    shots: Sequence[int] = DEFAULT_SHOTS,
    queries: int = 1,
    episodes: int = 1000,
    seed: int = 0,
    pixels: torch.Tensor | None = None,
) -> tuple[list[FewShotResult], list[str]]:
    """N-way K-shot accuracy of nearest neighbour on raw pixels over the episodes
    `few_shot_table` draws for `data` with the same arguments (both protocols where the
    classes have groups; scored by the mean distance to the K support images). `pixels`:
    `pixel_embeddings` of ``data.images`` when the caller has them already. Returns the rows
    and notes, as `few_shot_table`."""
    rows, notes = few_shot_table(
        pixel_model(),
        pixel_embeddings(data.images) if pixels is None else pixels,
        data,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        seed=seed,
    )
    return [r for r in rows if r.scoring == "mean"], notes
