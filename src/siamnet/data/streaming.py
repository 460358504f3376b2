"""Training batches of images kept on disk: the batches are drawn in the training process, the
images they need are decoded in ``DataLoader`` worker processes.

The seeded sampler (an objective's, on index tensors) runs where it always runs, in the
training process, in the same order, so a run draws the same batches whether its images are in
memory or on disk, and resumes exactly. `BatchDraws` hands each drawn batch to the loader as
its "key"; a worker decodes the rows the batch names (`batch_rows`) through
`siamnet.data.image_index.ImageFiles.decode`, the very reading a cache is filled by, and returns
them sorted with their row numbers; the step then picks each index's image from them
(`rows_lookup`). Workers are kept between epochs and read ahead ``prefetch_factor`` batches
each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from siamnet.data.image_index import ImageFiles

Batch = dict[str, torch.Tensor]

#: Batches each loader worker decodes ahead of the step.
PREFETCH = 2


def batch_rows(batch: Batch, keys: Sequence[str]) -> torch.Tensor:
    """int64 ``[M]``: the distinct rows (sorted) that the index tensors ``batch[k]`` of
    `keys` name."""
    parts = [batch[k].reshape(-1) for k in keys if k in batch]
    return torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.int64)


def rows_lookup(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Positions in sorted `rows` ``[M]`` of the row numbers `index` (any shape)."""
    return torch.searchsorted(rows, index)


class BatchDraws(Sampler[Batch]):
    """`steps` batches, each ``draw(generator)``, drawn in the training process when the loader
    asks for the next (it keeps its workers ``PREFETCH`` batches ahead)."""

    def __init__(
        self, draw: Callable[[torch.Generator], Batch], generator: torch.Generator, steps: int
    ) -> None:
        self.draw, self.generator, self.steps = draw, generator, steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            yield self.draw(self.generator)

    def __len__(self) -> int:
        return self.steps


class BatchImages(Dataset):
    """``batch -> (batch, rows int64 [M], images uint8 [M, C, H, W])``: the images of the
    rows a batch names in `keys`, decoded on `threads` threads (1 in a worker process; None:
    `siamnet.data.image_index.decode_threads`)."""

    def __init__(self, files: ImageFiles, keys: Sequence[str], threads: int | None = 1) -> None:
        self.files, self.keys, self.threads = files, tuple(keys), threads

    def __getitem__(self, batch: Batch) -> tuple[Batch, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        rows = batch_rows(batch, self.keys)
        return batch, rows, self.files.decode(rows, threads=self.threads)

    def __len__(self) -> int:
        return len(self.files)


def batch_loader(
    files: ImageFiles,
    keys: Sequence[str],
    draws: BatchDraws,
    workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` yielding ``(batch, rows, images)`` for each batch of `draws`, decoded
    by `workers` processes (0: in this process, on threads), in the order drawn."""
    return DataLoader(
        BatchImages(files, keys, threads=1 if workers else None),
        batch_size=None,
        sampler=draws,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers else None,
        pin_memory=pin_memory,
    )
