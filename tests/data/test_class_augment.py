import pytest
import torch

from siamnet.data.class_augment import with_rotated_classes
from siamnet.data.image_index import TurnedRows, concat_images, rotate_images
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


def _materialized_rotations(images: torch.Tensor) -> torch.Tensor:
    return torch.cat([images] + [torch.rot90(images, k, dims=(2, 3)) for k in (1, 2, 3)])


def test_rotated_classes_are_views_of_the_same_pixels_not_copies():
    images = torch.randint(0, 256, (12, 3, 7, 7), dtype=torch.uint8)
    data = LabeledImages(images, torch.arange(12) % 4, ["a", "b", "c", "d"])
    out = with_rotated_classes(data)
    assert isinstance(out.images, TurnedRows)
    assert out.images.pixels is images  # nothing copied: 4× the rows, 1× the memory
    assert out.images.shape == (48, 3, 7, 7)
    reference = _materialized_rotations(images)
    assert torch.equal(out.images[:], reference)
    index = torch.tensor([47, 0, 13, 25, 36, 12, 12])
    assert torch.equal(out.images.index_select(0, index), reference[index])
    assert torch.equal(out.images[index], reference[index])
    assert torch.equal(out.images[5], reference[5])
    assert torch.equal(out.images[3:30:4], reference[3:30:4])


def test_subsets_and_device_moves_of_rotated_views_keep_their_turns():
    images = torch.randint(0, 256, (10, 1, 5, 5), dtype=torch.uint8)
    out = with_rotated_classes(LabeledImages(images, torch.arange(10) % 5, list("abcde")))
    reference = _materialized_rotations(images)
    subset = out.select_classes(torch.tensor([1, 7, 18]))
    assert isinstance(subset.images, TurnedRows)
    kept = torch.isin(out.labels, torch.tensor([1, 7, 18]))
    assert torch.equal(subset.images[:], reference[kept])
    moved = out.images.to("cpu")
    assert torch.equal(moved.index_select(0, torch.tensor([31, 2])), reference[[31, 2]])
    turned_again = rotate_images(out.images, 1)
    assert torch.equal(turned_again[:], torch.rot90(reference, 1, dims=(2, 3)))


def test_joining_unrelated_tensors_and_views_gives_one_tensor():
    a = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    b = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    joined = concat_images([rotate_images(a, 1), b])
    assert isinstance(joined, torch.Tensor)
    assert torch.equal(joined, torch.cat([torch.rot90(a, 1, dims=(2, 3)), b]))


def test_views_of_wide_images_join_and_turn_half_way():
    wide = torch.randint(0, 256, (3, 1, 4, 6), dtype=torch.uint8)
    joined = concat_images([wide, wide])  # the same pixels twice: a view
    assert torch.equal(joined[:], torch.cat([wide, wide]))
    half = rotate_images(wide, 2)
    assert torch.equal(half[:], torch.rot90(wide, 2, dims=(2, 3)))
    with pytest.raises(ValueError, match="square"):
        rotate_images(wide, 1)
