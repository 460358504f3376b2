"""A generated folder of colour photographs for the tests: JPEG, PNG, RGBA and grey files of
mixed sizes and aspects, one sub-folder per class, each class its own hue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: ``(height, width)`` the images cycle through: wide, tall and square, 20 to 40 pixels.
SIZES = [(24, 32), (40, 30), (28, 28), (20, 36), (36, 24), (32, 32)]


def photo(rng: np.random.Generator, hue: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a class's colour, a gradient and noise, so that images differ."""
    h, w = size
    base = np.array([(hue * 67) % 256, (hue * 151) % 256, (hue * 29 + 90) % 256], np.float64)
    ramp = np.linspace(0, 60, w)[None, :, None]
    noise = rng.normal(0, 18, (h, w, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def make_photo_folder(root: Path, classes: int = 4, per_class: int = 6, seed: int = 0) -> Path:
    """`root` holding `classes` class folders of `per_class` images each, written as JPEG,
    PNG, RGBA PNG and grey JPEG in turn, at the sizes of `SIZES` in turn."""
    rng = np.random.default_rng(seed)
    k = 0
    for c in range(classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = photo(rng, c, SIZES[k % len(SIZES)])
            kind = k % 4
            if kind == 0:
                Image.fromarray(array).save(folder / f"{i}.jpg", quality=90)
            elif kind == 1:
                Image.fromarray(array).save(folder / f"{i}.png")
            elif kind == 2:
                alpha = np.full(array.shape[:2], 255, np.uint8)
                alpha[:2] = 0  # a transparent band, laid onto white when read
                Image.fromarray(np.dstack([array, alpha]), "RGBA").save(folder / f"{i}.png")
            else:
                Image.fromarray(array).convert("L").save(folder / f"{i}.jpg", quality=90)
            k += 1
    return root
