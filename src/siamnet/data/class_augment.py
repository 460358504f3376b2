"""Class augmentation: new classes made from old ones by rotation.

Omniglot practice (Santoro et al. 2016; Vinyals et al. 2016; Snell et al. 2017) multiplies the
number of training classes by treating each 90° rotation of a class as a class of its own. More
training classes teach an embedding that transfers better to classes never seen.
"""

from __future__ import annotations

import torch

from siamnet.data.image_index import concat_images, rotate_images
from siamnet.data.labeled import LabeledImages


def with_rotated_classes(
    data: LabeledImages, quarter_turns: tuple[int, ...] = (1, 2, 3)
) -> LabeledImages:
    """`data` plus, for each k in `quarter_turns`, every image rotated by k·90° as a new class
    named ``"<class>@<k·90>"``. ``[N, C, H, W]`` -> ``[N·(1+len(quarter_turns)), C, H, W]``;
    square images only (else rotations change the shape). The rotated rows are views, not
    copies: images held in memory become a `TurnedRows` over the same pixels, images kept on
    disk stay there, each with the turn to make when it is read."""
    h, w = data.image_size
    if h != w:
        raise ValueError(f"rotated classes need square images, got {h}×{w}")
    images = [data.images]
    labels = [data.labels]
    classes = list(data.classes)
    groups = list(data.groups) if data.groups is not None else None
    k_classes = data.num_classes
    for i, k in enumerate(quarter_turns, start=1):
        images.append(rotate_images(data.images, k))
        labels.append(data.labels + i * k_classes)
        classes += [f"{c}@{90 * k}" for c in data.classes]
        if groups is not None:
            groups += list(data.groups)
    return LabeledImages(
        images=concat_images(images),
        labels=torch.cat(labels),
        classes=classes,
        groups=groups,
        source=data.source,
        notes=data.notes,
    )
