"""A small model trained in the tests on simple drawn shapes, so that comparing, classifying
and searching give meaningful answers. Shared by the inference, gallery, export and CLI tests.

Classes are white-on-black shapes in 28x28 images with random shifts: a vertical bar, a cross,
a ring and a box outline. The blog post's small CNN learns them in a few dozen Adam steps.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from PIL import Image

from siamnet.checkpoint import save_checkpoint
from siamnet.evaluate import best_accuracy_threshold, embed_images
from siamnet.models.losses import bce_loss, contrastive_loss
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model

SHAPES = ("bar", "cross", "ring", "box")
SIZE = 28


def draw_shapes(labels: torch.Tensor, seed: int = 0, shift: int = 3) -> torch.Tensor:
    """uint8 ``[N, 1, 28, 28]``: shape ``SHAPES[label]`` of each label, randomly shifted."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    centre = 13.5 + torch.randint(-shift, shift + 1, (n, 2), generator=g).float()
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    dy = (yy[None] - centre[:, 0, None, None]).abs()
    dx = (xx[None] - centre[:, 1, None, None]).abs()
    bar = (dx <= 2) & (dy <= 9)
    cross = bar | ((dy <= 2) & (dx <= 9))
    ring = ((dx**2 + dy**2).sqrt() - 7).abs() <= 1.5
    box = (torch.maximum(dx, dy) >= 7) & (torch.maximum(dx, dy) <= 9)
    masks = torch.stack([bar, cross, ring, box])  # [4, N, 28, 28]
    chosen = masks[labels, torch.arange(n)]
    noise = torch.randint(0, 30, (n, SIZE, SIZE), generator=g)
    return torch.where(chosen, 255 - noise, noise).to(torch.uint8).unsqueeze(1)


def shape_set(per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(len(SHAPES)).repeat_interleave(per_class)
    return draw_shapes(labels, seed), labels


def train_shapes_model(loss: str = "contrastive", seed: int = 0) -> SiameseNet:
    """The blog post's small CNN trained on pairs of shapes with `loss` (``contrastive`` or
    ``bce``), on one thread (fastest for this size, and robust to a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps, batch = (120, 48) if loss == "bce" else (40, 32)
    try:
        return _train(loss, steps, seed, batch)
    finally:
        torch.set_num_threads(threads)


def _train(loss: str, steps: int, seed: int, batch: int) -> SiameseNet:
    torch.manual_seed(seed)
    spec = shapes_spec(loss)
    model = build_model(spec)
    images, labels = shape_set(64, seed=seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 2)
    model.train()
    for _ in range(steps):
        left = torch.randint(0, len(images), (batch,), generator=g)
        same = torch.rand(batch, generator=g) < 0.5
        offset = torch.randint(1, len(SHAPES), (batch,), generator=g)
        right_class = torch.where(same, labels[left], (labels[left] + offset) % len(SHAPES))
        right = right_class * 64 + torch.randint(0, 64, (batch,), generator=g)
        target = same.float()
        if loss == "bce":
            out = bce_loss(model(images[left], images[right]), target)
        else:
            e = model.embed(torch.cat([images[left], images[right]]))
            out = contrastive_loss(e[:batch], e[batch:], target, margin=1.0)
        optimizer.zero_grad()
        out.backward()
        optimizer.step()
    return model.eval()


def shapes_spec(loss: str) -> ModelSpec:
    return ModelSpec(
        model="seed-cnn",
        loss=loss,
        head="l1" if loss == "bce" else "euclidean",
        image_size=(SIZE, SIZE),
        embedding_norm=loss != "bce",
    )


def calibrated_threshold(model: SiameseNet, seed: int = 5) -> float:
    """The best-accuracy threshold on fresh same/different pairs of shapes."""
    images, labels = shape_set(16, seed=seed)
    e = embed_images(model, images)
    left, right = torch.triu_indices(len(e), len(e), offset=1)
    scores = model.head.to_score(model.head(e[left], e[right]))
    return best_accuracy_threshold(scores, (labels[left] == labels[right]).float())


@functools.cache
def trained(loss: str) -> tuple[SiameseNet, float]:
    """A trained model and its threshold, made once per test process."""
    model = train_shapes_model(loss)
    return model, calibrated_threshold(model)


def write_checkpoint(path: Path, loss: str = "contrastive") -> Path:
    """Save the trained shapes model for `loss` as a siamnet checkpoint at `path`."""
    model, threshold = trained(loss)
    metadata = {
        "model_spec": shapes_spec(loss).to_dict(),
        "classes": list(SHAPES),
        "threshold": threshold,
        "training_args": {},
    }
    save_checkpoint(path, model, metadata)
    return path


def write_png(path: Path, image: torch.Tensor, invert: bool = False) -> Path:
    """Write uint8 ``[1, H, W]`` as a greyscale PNG (optionally black-on-white)."""
    array = image[0].numpy()
    Image.fromarray(255 - array if invert else array).save(path)
    return path


def write_shape_folder(root: Path, per_class: int, seed: int, invert: bool = False) -> Path:
    """``root/<shape>/<i>.png`` for every shape."""
    images, labels = shape_set(per_class, seed=seed)
    for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / SHAPES[label]
        folder.mkdir(parents=True, exist_ok=True)
        write_png(folder / f"{i}.png", image, invert)
    return root


def shape_png(path: Path, shape: str, seed: int, invert: bool = False) -> Path:
    """One PNG of `shape`."""
    image = draw_shapes(torch.tensor([SHAPES.index(shape)]), seed)[0]
    return write_png(path, image, invert)
