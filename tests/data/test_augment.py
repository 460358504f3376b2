"""Batched random affine augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siamnet.data.augment import AffineRanges, affine_matrices, random_affine
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
