"""Batched random affine augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siamnet.data.augment import (
    AffineRanges,
    PhotoRanges,
    affine_matrices,
    batch_augmentation,
    crop_boxes,
    jitter_colour,
    random_affine,
    random_photo,
    resized_crops,
)
from siamnet.errors import ArgumentError

IDENTITY_RANGES = AffineRanges(rotation=0, shear=0, scale=(1, 1), translate=0, probability=1)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)


def params(b: int, rotation=0.0, shear=(0.0, 0.0), scale=(1.0, 1.0), translate=(0.0, 0.0)):
    return (
        torch.full((b,), float(rotation)),
        torch.tensor([shear] * b, dtype=torch.float32),
        torch.tensor([scale] * b, dtype=torch.float32),
        torch.tensor([translate] * b, dtype=torch.float32),
    )


def test_identity_parameters_give_the_identity_matrix():
    theta = affine_matrices(*params(3), size=(28, 20))
    assert torch.equal(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))


def test_identity_parameters_give_back_the_input():
    images = torch.rand(8, 3, 28, 28) * 255
    out = random_affine(images, torch.Generator().manual_seed(0), IDENTITY_RANGES)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.allclose(out, images, atol=1e-6, rtol=0)


def test_probability_zero_leaves_the_input_unchanged():
    images = torch.rand(8, 1, 28, 28)
    ranges = AffineRanges(probability=0.0)
    assert torch.equal(random_affine(images, torch.Generator(), ranges), images)


def test_shape_and_dtype_are_kept_and_images_change():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 28, 28)
    out = random_affine(images, g)
    assert out.shape == (16, 1, 28, 28) and out.dtype == torch.float32
    changed = (out - images).flatten(1).abs().amax(1) > 1e-3
    # each image stays unchanged with probability 0.5**4: most change, and some may not
    assert 8 <= int(changed.sum()) <= 16
    pixels = torch.randint(0, 256, (16, 3, 10, 12), dtype=torch.uint8)
    out8 = random_affine(pixels, g)
    assert out8.shape == pixels.shape and out8.dtype == torch.uint8


def test_rotation_by_90_degrees_matches_rot90():
    images = torch.rand(2, 1, 9, 9)
    theta = affine_matrices(*params(2, rotation=90.0), size=(9, 9))
    expected = torch.rot90(images, 1, dims=(-2, -1))  # counter-clockwise as displayed
    assert torch.allclose(warp(images, theta), expected, atol=1e-5)
    even = torch.rand(1, 1, 8, 8)
    theta = affine_matrices(*params(1, rotation=-90.0), size=(8, 8))
    assert torch.allclose(warp(even, theta), torch.rot90(even, -1, dims=(-2, -1)), atol=1e-5)


def test_translation_moves_content_right_and_down_in_pixels():
    image = torch.zeros(1, 1, 6, 10)
    image[0, 0, 2, 3] = 1.0
    theta = affine_matrices(*params(1, translate=(2.0, 1.0)), size=(6, 10))
    moved = warp(image, theta)
    assert torch.nonzero(moved[0, 0] > 0.99).tolist() == [[3, 5]]


def test_scale_on_a_non_square_image_stretches_about_the_centre():
    image = torch.zeros(1, 1, 5, 9)
    image[0, 0, 2, 5] = 1.0  # one pixel right of the centre (4)
    theta = affine_matrices(*params(1, scale=(2.0, 1.0)), size=(5, 9))
    out = warp(image, theta)
    assert float(out[0, 0, 2, 6]) > 0.4  # mapped to centre + 2
    assert float(out[0, 0, :, :4].abs().sum()) == 0.0


def test_fill_value_pads_the_background():
    images = torch.full((4, 1, 8, 8), 0.5)
    ranges = AffineRanges(rotation=0, shear=0, scale=(0.5, 0.5), translate=0, probability=1)
    out = random_affine(images, torch.Generator(), ranges, fill=0.5)
    assert torch.allclose(out, images, atol=1e-6)
    black = random_affine(images, torch.Generator(), ranges, fill=0.0)
    assert float(black[:, :, 0, 0].max()) == 0.0 and float(black[:, :, 4, 4].min()) > 0.49


def test_same_generator_seed_gives_the_same_distortions():
    images = torch.rand(8, 1, 12, 12)
    a = random_affine(images, torch.Generator().manual_seed(3))
    b = random_affine(images, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [{"rotation": -1.0}, {"scale": (1.2, 0.8)}, {"scale": (0.0, 1.0)}, {"probability": 1.5}],
)
def test_bad_ranges_are_argument_errors(kwargs):
    with pytest.raises(ArgumentError, match="affine"):
        AffineRanges(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_with_a_cpu_generator_match_the_cpu_result():
    images = torch.rand(8, 1, 16, 16)
    on_cpu = random_affine(images, torch.Generator().manual_seed(0))
    on_cuda = random_affine(images.cuda(), torch.Generator().manual_seed(0))
    assert on_cuda.is_cuda and torch.allclose(on_cuda.cpu(), on_cpu, atol=1e-4)


# --- --augment photo ----------------------------------------------------------------------------


def test_photo_jitter_matches_torchvision_per_image():
    from torchvision.transforms.v2 import functional as TF

    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 12, 10, generator=generator)
    factors = torch.tensor(
        [[1.3, 0.7, 1.2, 0.04], [0.6, 1.4, 0.5, -0.05], [1.0, 1.0, 1.0, 0.0], [1.1, 0.9, 0.0, 0.5]]
    )
    got = jitter_colour(x, *factors.T)
    for index, (image, (b, c, s, h)) in enumerate(zip(x, factors.tolist(), strict=True)):
        want = TF.adjust_brightness(image, b)
        want = TF.adjust_contrast(want, c)
        want = TF.adjust_saturation(want, s)
        want = TF.adjust_hue(want, h)
        torch.testing.assert_close(got[index], want, atol=2e-6, rtol=0)
    grey = torch.rand(2, 1, 8, 8, generator=generator)
    got = jitter_colour(grey, *factors[:2].T)
    for index, (image, (b, c, _, _)) in enumerate(zip(grey, factors[:2].tolist(), strict=True)):
        want = TF.adjust_contrast(TF.adjust_brightness(image, b), c)
        torch.testing.assert_close(got[index], want)


def test_a_crop_of_the_whole_image_is_the_image_and_a_flip_mirrors_it():
    x = torch.rand(2, 3, 9, 14)
    corner, box = torch.zeros(2, 2), torch.tensor([[14.0, 9.0]] * 2)
    same = resized_crops(x, corner, box, torch.tensor([False, False]))
    torch.testing.assert_close(same, x)
    mirrored = resized_crops(x, corner, box, torch.tensor([True, False]))
    torch.testing.assert_close(mirrored[0], x[0].flip(-1))
    torch.testing.assert_close(mirrored[1], x[1])


def test_a_crop_is_resized_as_torchvision_resizes_it():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(1, 3, 16, 16)
    got = resized_crops(
        x, torch.tensor([[4.0, 2.0]]), torch.tensor([[8.0, 8.0]]), torch.zeros(1, dtype=torch.bool)
    )
    want = TF.resized_crop(x[0], top=2, left=4, height=8, width=8, size=[16, 16], antialias=False)
    # the edges differ: they blend in the pixels just outside the box, torchvision repeats the
    # box's own edge
    torch.testing.assert_close(got[0, :, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_crop_boxes_follow_the_ranges_and_stay_inside_the_image():
    ranges = PhotoRanges(scale=(0.3, 0.6))
    u = torch.rand(2000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    corner, box = crop_boxes(u, ranges, (40, 60))
    area = box.prod(dim=1) / (40 * 60)
    assert area.min() >= 0.3 - 1e-9 and area.max() <= 0.6 + 1e-9
    ratio = box[:, 0] / box[:, 1]
    assert ratio.min() >= 3 / 4 - 1e-9 and ratio.max() <= 4 / 3 + 1e-9
    assert (corner >= 0).all() and (corner + box <= torch.tensor([60.0, 40.0]) + 1e-9).all()


def test_photo_augmentation_is_per_image_seeded_and_keeps_shape_and_dtype():
    images = torch.randint(0, 256, (6, 3, 20, 24), dtype=torch.uint8)
    a = random_photo(images, torch.Generator().manual_seed(0))
    b = random_photo(images, torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8 and a.shape == images.shape and torch.equal(a, b)
    twins = images[:1].expand(6, -1, -1, -1)
    out = random_photo(twins.float(), torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 255
    assert len({tuple(o.flatten()[:50].tolist()) for o in out}) == 6  # one draw per image
    still = PhotoRanges(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, **NO_JITTER_COLOUR)
    square = images[:, :, :20, :20].float()
    torch.testing.assert_close(
        random_photo(square, torch.Generator(), still), square, atol=1e-3, rtol=0
    )
    assert batch_augmentation("none", torch.Generator()) is None
    grey = batch_augmentation("photo", torch.Generator())(torch.rand(3, 1, 16, 16) * 255)
    assert grey.shape == (3, 1, 16, 16)


NO_JITTER_COLOUR = {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": (0.0, 1.0)},
        {"scale": (0.5, 1.5)},
        {"ratio": (2.0, 1.0)},
        {"flip": 2.0},
        {"hue": 0.7},
    ],
)
def test_bad_photo_ranges_are_argument_errors(kwargs):
    with pytest.raises(ArgumentError, match="photo"):
        PhotoRanges(**kwargs)
    with pytest.raises(ArgumentError, match="expected none, affine or photo"):
        batch_augmentation("colour", torch.Generator())


@pytest.mark.parametrize("augment", ["affine", "photo"])
def test_parameters_drawn_on_the_cpu_serve_images_on_another_device(augment):
    """Images on the meta device (shapes only) stand for a GPU's: every tensor the warp and the
    jitter combine must be moved to the images' device."""
    images = torch.empty(4, 3, 16, 16, device="meta")
    out = batch_augmentation(augment, torch.Generator().manual_seed(0))(images)
    assert out.device.type == "meta" and out.shape == images.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_photo_on_cuda_with_a_cpu_generator_matches_the_cpu_result():
    images = torch.rand(8, 3, 16, 16) * 255
    on_cpu = random_photo(images, torch.Generator().manual_seed(0))
    on_cuda = random_photo(images.cuda(), torch.Generator().manual_seed(0))
    assert on_cuda.is_cuda and torch.allclose(on_cuda.cpu(), on_cpu, atol=1e-2)
