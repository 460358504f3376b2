import pytest
import torch

from siamnet.data.class_augment import with_rotated_classes
from siamnet.data.labeled import LabeledImages


def test_rotations_become_new_classes_with_rotated_images():
    images = torch.arange(2 * 9, dtype=torch.uint8).view(2, 1, 3, 3)
    data = LabeledImages(images, torch.tensor([0, 1]), ["a", "b"], groups=["g", "h"])
    out = with_rotated_classes(data)
    assert out.classes == ["a", "b", "a@90", "b@90", "a@180", "b@180", "a@270", "b@270"]
    assert out.groups == ["g", "h"] * 4
    assert out.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert torch.equal(out.images[2], torch.rot90(images[0], 1, dims=(1, 2)))
    assert torch.equal(out.images[5], torch.rot90(images[1], 2, dims=(1, 2)))
    assert out.images.dtype == torch.uint8


def test_non_square_images_are_refused():
    data = LabeledImages(
        torch.zeros(2, 1, 3, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"]
    )
    with pytest.raises(ValueError, match="square"):
        with_rotated_classes(data)
