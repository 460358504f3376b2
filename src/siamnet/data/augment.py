"""Batched random affine distortions (Koch et al. 2015, "Siamese Neural Networks for One-shot
Image Recognition", section 4.2): rotation, shear, scale and translation.

A whole batch is warped by one ``affine_grid`` + ``grid_sample`` on the images' device, each
image with its own parameters, instead of one PIL call per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from siamnet.errors import ArgumentError

_IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class AffineRanges:
    """Ranges of the random affine parameters; the defaults are Koch et al.'s.

    Attributes:
        rotation: degrees, uniform in ``[-rotation, rotation]`` (positive = counter-clockwise
            as displayed).
        shear: uniform in ``[-shear, shear]``, x and y independently.
        scale: ``(low, high)``, uniform, x and y independently.
        translate: pixels, uniform in ``[-translate, translate]``, x and y independently.
        probability: each of the four transforms is applied, independently, with this
            probability (otherwise it is the identity).
    """

    rotation: float = 10.0
    shear: float = 0.3
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 2.0
    probability: float = 0.5

    def __post_init__(self) -> None:
        for name in ("rotation", "shear", "translate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ArgumentError(f"affine {name} range must be a number >= 0, got {value!r}")
        low, high = self.scale
        if not (0 < low <= high and math.isfinite(high)):
            raise ArgumentError(
                f"affine scale range must be (low, high) with 0 < low <= high, got {self.scale!r}"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ArgumentError(f"affine probability must lie in [0, 1], got {self.probability!r}")


def affine_matrices(
    rotation: torch.Tensor,
    shear: torch.Tensor,
    scale: torch.Tensor,
    translate: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """The ``theta`` ``[B, 2, 3]`` for ``F.affine_grid`` (``align_corners=False``) that warps
    images of `size` ``(H, W)`` by ``x -> R(rotation) · Shear · Scale · x + translate`` about
    the image centre, in pixel units.

    Args:
        rotation: ``[B]`` degrees, counter-clockwise as displayed.
        shear: ``[B, 2]`` (x, y): ``[[1, shear_x], [shear_y, 1]]``.
        scale: ``[B, 2]`` (x, y).
        translate: ``[B, 2]`` pixels (x right, y down).

    Identity parameters (0, 0, 1, 0) give exactly the identity ``theta``.
    """
    h, w = size
    a = torch.deg2rad(rotation)
    cos, sin = torch.cos(a), torch.sin(a)
    one = torch.ones_like(rotation)
    # Forward map in pixel coordinates (x right, y down) about the centre.
    rot = torch.stack([cos, sin, -sin, cos], dim=-1).view(-1, 2, 2)
    shr = torch.stack([one, shear[:, 0], shear[:, 1], one], dim=-1).view(-1, 2, 2)
    forward = rot @ shr @ torch.diag_embed(scale)
    # affine_grid maps output to input coordinates, so theta holds the inverse map, moved to
    # normalised coordinates n = p * (2 / W, 2 / H). A closed-form 2×2 inverse is exact for
    # the identity and needs no solver on the device.
    (p, q), (r, s) = forward[:, 0].unbind(-1), forward[:, 1].unbind(-1)
    det = (p * s - q * r)[:, None, None]
    inverse = torch.stack([s, -q, -r, p], dim=-1).view(-1, 2, 2) / det
    to_norm = torch.tensor([2.0 / w, 2.0 / h], dtype=inverse.dtype, device=inverse.device)
    linear = inverse * to_norm[:, None] / to_norm[None, :]
    shift = -(inverse @ translate.unsqueeze(-1)).squeeze(-1) * to_norm
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    ranges: AffineRanges = AffineRanges(),
    fill: float = 0.0,
) -> torch.Tensor:
    """Warp each image of ``[B, C, H, W]`` by its own random affine map (bilinear; pixels from
    outside the image take the value `fill`, the background: 0 for MNIST-like data).

    Parameters are drawn on the generator's device (a CPU generator serves CUDA images) and the
    warp runs on the images' device. Images whose parameters all came out as the identity are
    returned exactly. The output has the input's dtype; uint8 input is rounded back.
    """
    if images.dim() != 4:
        raise ArgumentError(f"images must be [B, C, H, W], got shape {list(images.shape)}")
    b, _, h, w = images.shape
    if b == 0 or ranges.probability == 0.0:
        return images.clone()
    # Parameters and matrices are computed where the generator lives, then moved.
    u = torch.rand((b, 11), generator=generator, device=generator.device)
    apply = u[:, 7:] < ranges.probability  # [B, 4]: rotation, shear, scale, translation
    rotation = torch.where(apply[:, 0], (2 * u[:, 0] - 1) * ranges.rotation, 0.0)
    shear = torch.where(apply[:, 1:2], (2 * u[:, 1:3] - 1) * ranges.shear, 0.0)
    low, high = ranges.scale
    scale = torch.where(apply[:, 2:3], low + u[:, 3:5] * (high - low), 1.0)
    translate = torch.where(apply[:, 3:4], (2 * u[:, 5:7] - 1) * ranges.translate, 0.0)

    theta = affine_matrices(rotation, shear, scale, translate, (h, w))
    unchanged = (theta == _IDENTITY.to(theta.device)).flatten(1).all(dim=1)
    work_dtype = images.dtype if images.dtype.is_floating_point else torch.float32
    x = images.to(work_dtype)
    theta = theta.to(images.device, work_dtype, non_blocking=True)
    unchanged = unchanged.to(images.device, non_blocking=True)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    # Sampling (x - fill) with zero padding and adding fill back pads with `fill` exactly.
    warped = (
        F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        + fill
    )
    out = torch.where(unchanged[:, None, None, None], x, warped)
    if images.dtype.is_floating_point:
        return out
    info = torch.iinfo(images.dtype)
    return out.round_().clamp_(info.min, info.max).to(images.dtype)
