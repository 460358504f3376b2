"""Nearest neighbour on raw pixels: the same episodes as a model's table, and the right answers
where pixels alone tell the classes apart."""

from __future__ import annotations

import torch

from siamnet.data.labeled import LabeledImages
from siamnet.evaluate import few_shot_table
from siamnet.evaluate.pixels import pixel_embeddings, pixel_few_shot_table, pixel_model


def blobs(classes: int = 12, per_class: int = 6, noise: float = 0.0) -> LabeledImages:
    """Class ``c``: a bright square at its own place on an 8×8 image, plus noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.zeros(len(labels), 1, 8, 8)
    for i, c in enumerate(labels.tolist()):
        r, k = divmod(c, 4)
        images[i, 0, 2 * r : 2 * r + 2, 2 * k : 2 * k + 2] = 200.0
    images += noise * torch.randn(images.shape, generator=g)
    groups = ["even" if c % 2 == 0 else "odd" for c in range(classes)]
    return LabeledImages(
        images.clamp(0, 255).to(torch.uint8), labels, [f"c{c}" for c in range(classes)], groups
    )


def test_pixels_tell_apart_what_differs_in_pixels():
    rows, notes = pixel_few_shot_table(blobs(), ways=[5, 10], shots=[1], episodes=50)
    assert [(r.protocol, r.ways, r.shots) for r in rows] == [
        ("unstructured", 5, 1),
        ("unstructured", 10, 1),
        ("within-group", 5, 1),
        ("within-group", 6, 1),
    ]
    assert all(r.accuracy == 1.0 and r.scoring == "mean" for r in rows)
    assert any("capped" in n for n in notes)  # 6 classes per group: 10-way capped at 6


def test_same_episodes_and_scores_as_few_shot_table():
    data = blobs(noise=90.0)
    args = {"ways": [5], "shots": [1, 3], "episodes": 200, "seed": 4}
    expected, _ = few_shot_table(pixel_model(), pixel_embeddings(data.images), data, **args)
    rows, _ = pixel_few_shot_table(data, **args)
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in expected if r.scoring == "mean"]
    assert 0.2 < min(r.accuracy for r in rows) < 1.0  # noise makes some queries wrong
