"""The built-in data set: scikit-learn's bundled handwritten digits, needing no network.

1,797 real 8×8 digits (values 0..16, from the UCI "Optical Recognition of Handwritten Digits"
set) scaled to 0..255 and resized to 28×28 like MNIST, with a fixed stratified train/test split.
"""

from __future__ import annotations

import numpy as np
import torch

from siamnet.data.dataset import Dataset
from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import resize_images
from siamnet.images import check_image_size

#: The data `siamnet train` uses when no ``--data`` is given, and the classes it then holds out
#: of training for one-shot testing (digits 6-9, as the demo measures one-shot accuracy).
DEFAULT_DATA = "digits"
DEFAULT_HELD_OUT_CLASSES = ("6", "7", "8", "9")

#: Fraction of each class in the test split, and the seed of the fixed split.
TEST_FRACTION = 0.25
SPLIT_SEED = 0
DIGITS_SIZE = (28, 28)


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits: uint8 ``[1797, 1, 28, 28]`` (0..255) and int64 labels ``[1797]``."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    small = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = resize_images(torch.from_numpy(small)[:, None], DIGITS_SIZE)
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def load_digits(image_size: tuple[int, int] | None = None) -> Dataset:
    """`Dataset` ``digits`` with splits ``train`` (75%) and ``test`` (25%), stratified, fixed."""
    from sklearn.model_selection import train_test_split

    size = None if image_size is None else check_image_size(image_size)
    images, labels = digits_images()
    if size is not None:
        images = resize_images(images, size)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        stratify=labels.numpy(),
        random_state=SPLIT_SEED,
    )
    classes = [str(i) for i in range(10)]
    notes = (
        "8x8 scikit-learn digits scaled 0..16 -> 0..255 and resized to "
        f"{images.shape[2]}x{images.shape[3]}",
    )

    def part(index: np.ndarray) -> LabeledImages:
        idx = torch.from_numpy(np.sort(index))
        return LabeledImages(
            images[idx].contiguous(), labels[idx], classes, source="digits", notes=notes
        )

    return Dataset(
        "digits",
        {"train": part(train_idx), "test": part(test_idx)},
        {
            "train": "training (75%, stratified, fixed seed)",
            "test": "testing (25%, stratified, fixed seed)",
        },
    )
