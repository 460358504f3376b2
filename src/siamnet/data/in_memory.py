"""Data already in memory, for the Python API: numpy or torch arrays, a `LabeledImages`, a
`Dataset` or a map-style ``torch.utils.data.Dataset``, made into the `Dataset` every part of
siamnet takes (`as_dataset`). A SPEC string goes to `siamnet.data.registry.load_dataset`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from siamnet.data.dataset import Dataset, single_split
from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import classes_from_values, resize_labeled
from siamnet.errors import DataError

#: Images a torch ``Dataset`` is read in at once when it is turned into tensors.
READ_BATCH = 512


def as_dataset(
    data: Any, image_size: tuple[int, int] | None = None, name: str = "", cache: str = "auto"
) -> Dataset:
    """`data` as a `Dataset`: a SPEC (built-in name or path), a `Dataset`, a `LabeledImages`,
    a pair ``(images, labels)`` of arrays, or a map-style torch ``Dataset`` of
    ``(image, label)``; images are resized to `image_size` ``(H, W)`` when given. `cache`:
    whether a SPEC's folder of images is held in memory (`siamnet.data.cache`).

    >>> import numpy as np, siamnet
    >>> images = np.random.randint(0, 256, (40, 28, 28), dtype=np.uint8)
    >>> siamnet.as_dataset((images, np.arange(40) % 4)).train.num_classes
    4
    """
    if isinstance(data, (str,)) or hasattr(data, "__fspath__"):
        from siamnet.data.registry import load_dataset

        return load_dataset(str(data), image_size, cache)
    if isinstance(data, Dataset):
        if image_size is None:
            return data
        splits = {k: resize_labeled(v, image_size) if v else v for k, v in data.splits.items()}
        return Dataset(data.name, splits, data.roles)
    return single_split(name or "in-memory data", resize_labeled(as_labeled(data), image_size))


def as_labeled(data: Any) -> LabeledImages:
    """`data` (a `LabeledImages`, ``(images, labels)`` arrays or a torch ``Dataset``) as a
    `LabeledImages` with uint8 images ``[N, C, H, W]``."""
    if isinstance(data, LabeledImages):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        return from_arrays(images, labels)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return from_torch_dataset(data)
    raise DataError(
        f"data of type {type(data).__name__}: expected a SPEC (built-in name or path), a "
        "LabeledImages, a pair (images, labels) of arrays or a map-style torch Dataset"
    )


def from_arrays(images: Any, labels: Any, source: str = "in-memory data") -> LabeledImages:
    """Images ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]`` (C = 1 or 3; uint8 0..255,
    or floats in 0..1) and labels ``[N]`` (numbers or names) as a `LabeledImages`."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    x = x.detach().cpu()
    if x.dim() == 3:
        x = x[:, None]
    elif x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4:
        raise DataError(f"{source}: images must be [N, H, W] or [N, C, H, W], got {list(x.shape)}")
    x = to_uint8(x, source)
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    values = np.asarray(values).reshape(-1)
    if len(values) != len(x):
        raise DataError(f"{source}: {len(x)} images but {len(values)} labels")
    ids, classes = classes_from_values(values)
    return LabeledImages(x.contiguous(), ids, classes, source=source)


def to_uint8(x: torch.Tensor, source: str) -> torch.Tensor:
    """uint8 as it is; floats in 0..1 scaled by 255; other numbers in 0..255 as they are."""
    if x.dtype == torch.uint8:
        return x
    if x.dtype == torch.bool or x.numel() == 0:
        return x.to(torch.uint8) * 255
    lo, hi = float(x.min()), float(x.max())
    if x.is_floating_point() and lo >= 0.0 and hi <= 1.0:
        return (x.float() * 255.0).round().to(torch.uint8)
    if lo < 0 or hi > 255:
        raise DataError(
            f"{source}: pixel values span {lo:g}..{hi:g}; expected 0..255 (or 0..1 floats)"
        )
    return x.round().to(torch.uint8) if x.is_floating_point() else x.to(torch.uint8)


def from_torch_dataset(data: torch.utils.data.Dataset) -> LabeledImages:
    """Every ``(image, label)`` of a map-style torch ``Dataset`` read into tensors, in batches
    of `READ_BATCH` through a ``DataLoader`` (its images must share one size)."""
    loader = torch.utils.data.DataLoader(data, batch_size=READ_BATCH, shuffle=False)
    images, labels = [], []
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise DataError("torch Dataset: each item must be (image, label)")
        images.append(torch.as_tensor(batch[0]))
        labels.append(np.asarray(batch[1]).reshape(-1))
    name = type(data).__name__
    return from_arrays(torch.cat(images), np.concatenate(labels), source=f"torch Dataset {name}")
