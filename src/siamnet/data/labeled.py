"""`LabeledImages`: the one type every loader returns.

Images stay uint8 in one tensor ``[N, C, H, W]`` so that sampling pairs or episodes is plain
index arithmetic and memory stays small (MNIST's 60,000 images are 47 MB); a folder too large to
hold decoded keeps them on disk as `siamnet.data.image_index.ImageFiles`, which has the same
shape and is read per batch (sampling works on indices and labels alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from siamnet.data.image_index import ImageFiles, Images, RowView, take_images
from siamnet.errors import DataError


@dataclass(frozen=True)
class LabeledImages:
    """Images with integer labels ``0..K-1`` and the original class names.

    Attributes:
        images: uint8 ``[N, C, H, W]``: a tensor, an `ImageFiles` read when used, or a
            `TurnedRows` view of held pixels (rotated classes).
        labels: int64 ``[N]``, values in ``0..K-1``.
        classes: the K original class names (``"7"``, ``"Greek/character03"``).
        groups: optional, one group name per class (an Omniglot alphabet), length K.
        source: where the data came from, for messages.
        notes: remarks a user should see in ``data info`` (e.g. that images were resized).
    """

    images: Images
    labels: torch.Tensor
    classes: list[str]
    groups: list[str] | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        where = f", source={self.source!r}" if self.source else ""
        kept = ", on disk" if self.streamed else ""
        return (
            f"LabeledImages({n} images {c}×{h}×{w} uint8{kept}, {len(self.classes)} classes{where})"
        )

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        tensor = isinstance(self.images, (torch.Tensor, RowView))
        if not tensor or self.images.dtype != torch.uint8:
            raise DataError(f"{where}images must be a uint8 tensor, got {_describe(self.images)}")
        if self.images.dim() != 4:
            raise DataError(
                f"{where}images must have shape [N, C, H, W], got {list(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise DataError(f"{where}images must have 1 or 3 channels, got {self.images.shape[1]}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise DataError(f"{where}labels must be an int64 tensor, got {_describe(self.labels)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{where}{self.images.shape[0]} images but labels have shape "
                f"{list(self.labels.shape)}"
            )
        if len(self.images) == 0:
            raise DataError(f"{where}no images")
        k = len(self.classes)
        if k == 0:
            raise DataError(f"{where}no classes")
        lo, hi = int(self.labels.min()), int(self.labels.max())
        if lo < 0 or hi >= k:
            raise DataError(f"{where}labels must lie in 0..{k - 1}, found {lo}..{hi}")
        if self.groups is not None and len(self.groups) != k:
            raise DataError(f"{where}{k} classes but {len(self.groups)} group names")

    # --- shape -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def streamed(self) -> bool:
        """Whether the images stay on disk (`ImageFiles`), read per batch."""
        return isinstance(self.images, ImageFiles)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def class_counts(self) -> torch.Tensor:
        """int64 ``[K]``: examples per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    # --- subsets -----------------------------------------------------------------------------
    def subset(self, index: torch.Tensor) -> LabeledImages:
        """The examples at `index` (int64 ``[M]`` or bool ``[N]``), classes unchanged."""
        return replace(self, images=take_images(self.images, index), labels=self.labels[index])

    def select_classes(self, class_ids: Sequence[int] | torch.Tensor) -> LabeledImages:
        """Only the examples of `class_ids`, relabelled ``0..len(class_ids)-1`` in that order."""
        ids = torch.as_tensor(class_ids, dtype=torch.int64).flatten()
        if ids.numel() == 0:
            raise DataError(f"{self.source or 'data'}: no classes selected")
        remap = torch.full((self.num_classes,), -1, dtype=torch.int64)
        remap[ids] = torch.arange(ids.numel())
        keep = remap[self.labels] >= 0
        return LabeledImages(
            images=take_images(self.images, keep),
            labels=remap[self.labels[keep]],
            classes=[self.classes[i] for i in ids.tolist()],
            groups=None if self.groups is None else [self.groups[i] for i in ids.tolist()],
            source=self.source,
            notes=self.notes,
        )

    def class_ids(self, names: Sequence[str]) -> list[int]:
        """Indices of class `names`; a clear error names any that are missing.

        When no class is named by a number (Fashion-MNIST's "Shirt", "Bag"), a number ``i`` in
        ``0..K-1`` stands for the ``i``-th class, so ``6,7,8,9`` works for any 10-class set.
        """
        lookup = {name: i for i, name in enumerate(self.classes)}
        if not any(c.strip().isdigit() for c in self.classes):
            for n in names:
                if n.strip().isdigit() and int(n) < self.num_classes:
                    lookup.setdefault(n, int(n))
        missing = [n for n in names if n not in lookup]
        if missing:
            shown = ", ".join(self.classes[:12]) + (" ..." if self.num_classes > 12 else "")
            raise DataError(
                f"{self.source or 'data'}: no class named {', '.join(map(repr, missing))}; "
                f"classes are {shown}"
            )
        return [lookup[n] for n in names]


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor"
    return type(value).__name__
