"""The splits one run trains, validates and tests on, and the input normalisation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch

from siamnet.data.cache import wants_cache
from siamnet.data.class_augment import with_rotated_classes
from siamnet.data.image_index import ImageFiles, concat_images
from siamnet.data.in_memory import as_dataset
from siamnet.data.labeled import LabeledImages
from siamnet.data.splits import split_by_class, split_by_example
from siamnet.errors import ArgumentError
from siamnet.models.backbones import is_timm_name
from siamnet.models.pretrained import timm_normalization
from siamnet.train.config import TrainConfig

#: Images the ``standard`` normalisation's mean and std are measured on (the first ones).
_STATS_IMAGES = 20000
#: Images read from disk to measure them, spread evenly over the training set.
_STATS_STREAMED = 2000
#: Images decoded at once when they are measured from disk.
_STATS_CHUNK = 256


@dataclass
class TrainData:
    """The splits one run uses. `unseen` holds classes never seen in training, if any."""

    train: LabeledImages
    val: LabeledImages
    val_protocol: str
    test: LabeledImages | None
    unseen: LabeledImages | None
    notes: list[str]


def prepare_data(cfg: TrainConfig) -> TrainData:
    """Load ``--data`` (and ``--test-data``), hold out evaluation classes, split validation."""
    dataset = as_dataset(cfg.data, cfg.image_size, cache=cfg.cache)
    train = dataset.train
    given_test = cfg.test_data is not None
    test = (
        as_dataset(cfg.test_data, cfg.image_size, cache=cfg.cache).train
        if given_test
        else dataset.test
    )
    notes = list(train.notes)
    unseen = None
    if cfg.eval_classes or cfg.eval_fraction:
        train, unseen = split_by_class(
            train, eval_classes=cfg.eval_classes, eval_fraction=cfg.eval_fraction, seed=cfg.seed
        )
        if test is not None:  # the test split's examples of the held-out classes are unseen too
            held = [c for c in unseen.classes if c in test.classes]
            kept = [c for c in train.classes if c in test.classes]
            if held:
                unseen = _concat(unseen, test.select_classes(test.class_ids(held)))
            test = test.select_classes(test.class_ids(kept)) if kept else None
    elif test is not None and not set(test.classes) & set(train.classes):
        unseen, test = test, None  # e.g. Omniglot's evaluation alphabets
    if test is not None and (test.channels, test.image_size) != (train.channels, train.image_size):
        raise ArgumentError(
            f"--test-data {cfg.test_data}: images are {test.channels}×{test.image_size}, "
            f"training images {train.channels}×{train.image_size}; pass --image-size"
        )
    use_classes = train.num_classes >= 20 and cfg.val_classes_fraction > 0
    if use_classes:
        train, val = split_by_class(train, eval_fraction=cfg.val_classes_fraction, seed=cfg.seed)
        protocol = "held-out classes"
    else:
        train, val = split_by_example(train, cfg.val_fraction, seed=cfg.seed)
        protocol = "held-out examples of training classes"
    val = held_when_it_fits(val, cfg.cache)  # embedded every epoch
    rotate = cfg.rotate_classes
    if rotate == "auto":  # the default: as new classes where there are many (Omniglot's
        # practice); on a few classes (digits: 0 and 1 turned 180° look the same) it hurt
        rotate = use_classes
    if rotate:
        train = with_rotated_classes(train)
        notes.append(f"training classes ×4 by 90° rotations: {train.num_classes} classes")
    return TrainData(train, val, protocol, test, unseen, notes)


def held_when_it_fits(data: LabeledImages, cache: str) -> LabeledImages:
    """`data` with its images decoded into memory when they are on disk and, alone, fit under
    ``--cache auto``'s limit (a validation split, read every epoch, of a folder too large to
    hold whole); as it is otherwise."""
    if not data.streamed or cache != "auto" or not wants_cache(data.images.nbytes, "auto"):
        return data
    return replace(data, images=data.images.decode(desc="decoding validation images"))


def _concat(a: LabeledImages, b: LabeledImages) -> LabeledImages:
    """Examples of `a` and `b`, classes matched by name (b's classes must be in a)."""
    ids = torch.tensor(a.class_ids(b.classes), dtype=torch.int64)
    return LabeledImages(
        images=concat_images([a.images, b.images]),
        labels=torch.cat([a.labels, ids[b.labels]]),
        classes=a.classes,
        groups=a.groups,
        source=a.source,
        notes=a.notes,
    )


def normalization_for(cfg: TrainConfig, train: LabeledImages) -> dict[str, Any]:
    """``raw`` (0..255, the post), ``unit`` (0..1) or ``standard`` (per-channel mean/std); a
    timm model (``timm:NAME``) takes the mean and std of its pretrained configuration."""
    c = train.channels
    if is_timm_name(cfg.model):
        return timm_normalization(cfg.model, c)
    if cfg.normalize == "raw":
        return {"scale": 1.0, "mean": [0.0] * c, "std": [1.0] * c}
    if cfg.normalize == "unit":
        return {"scale": 255.0, "mean": [0.0] * c, "std": [1.0] * c}
    if cfg.normalize == "standard":
        if train.streamed:
            mean, std = streamed_channel_stats(train.images, _STATS_STREAMED)
            return {"scale": 255.0, "mean": mean, "std": std}
        images, n = train.images, min(len(train.images), _STATS_IMAGES)
        chunks = (images[i : min(n, i + _STATS_CHUNK)] for i in range(0, n, _STATS_CHUNK))
        mean, std = channel_stats(chunks, c)
        return {"scale": 255.0, "mean": mean, "std": std}
    raise ArgumentError(f"--normalize {cfg.normalize!r}: expected raw, unit or standard")


def streamed_channel_stats(images: ImageFiles, count: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std, in 0..1, of `count` images spread evenly over
    `images`, decoded in chunks so that memory holds one chunk: ``[C]`` each, std at least
    1e-3."""
    n = min(count, len(images))
    chosen = torch.linspace(0, len(images) - 1, n).round().long()
    chunks = (images.decode(chosen[i : i + _STATS_CHUNK]) for i in range(0, n, _STATS_CHUNK))
    return channel_stats(chunks, images.channels)


def channel_stats(chunks: Iterable[torch.Tensor], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std, in 0..1, of uint8 image `chunks` ``[B, C, H, W]``,
    one chunk in float64 at a time (a whole set in float64 took 8 bytes a pixel: 8.8 GB for
    20,000 colour images of 96 px): ``[C]`` each, std at least 1e-3."""
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    pixels = 0
    for chunk in chunks:
        x = chunk.double() / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(1, pixels)
    var = (squares - pixels * mean * mean) / max(1, pixels - 1)
    return mean.tolist(), var.clamp_min(0).sqrt().clamp_min(1e-3).tolist()
