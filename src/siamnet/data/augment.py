"""Batched augmentation on the device, each image with its own random parameters.

Random affine distortions (Koch et al. 2015, "Siamese Neural Networks for One-shot
Image Recognition", section 4.2): rotation, shear, scale and translation.

``--augment photo`` (`random_photo`): random resized crop, horizontal flip and colour jitter
(brightness, contrast, saturation, hue), as torchvision's ``RandomResizedCrop``,
``RandomHorizontalFlip`` and ``ColorJitter``.

A whole batch is warped by one ``affine_grid`` + ``grid_sample`` on the images' device, each
image with its own parameters, instead of one PIL call per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


# --- photographs: random resized crop, horizontal flip, colour jitter ------------------------


@dataclass(frozen=True)
class PhotoRanges:
    """Ranges of ``--augment photo``, drawn anew for every image.

    Attributes:
        scale: ``(low, high)``: the crop's area as a fraction of the image's, uniform.
        ratio: ``(low, high)``: the crop's width / height, log-uniform.
        flip: probability of a horizontal flip.
        brightness, contrast, saturation: each factor uniform in ``[1 - v, 1 + v]``
            (torchvision's ``ColorJitter`` convention).
        hue: the hue shift, uniform in ``[-hue, hue]`` turns (at most 0.5).

    The crop covers less of the image than torchvision's ``RandomResizedCrop`` default (down to
    8%): a one-shot model must still see what tells a class apart.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.05

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ArgumentError(
                f"photo crop scale must satisfy 0 < low <= high <= 1, got {self.scale}"
            )
        low, high = self.ratio
        if not (0 < low <= high and math.isfinite(high)):
            raise ArgumentError(f"photo crop ratio must satisfy 0 < low <= high, got {self.ratio}")
        for name in ("flip", "brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ArgumentError(f"photo {name} must lie in [0, 1], got {value!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ArgumentError(f"photo hue must lie in [0, 0.5], got {self.hue!r}")


def crop_boxes(
    u: torch.Tensor, ranges: PhotoRanges, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop boxes of ``RandomResizedCrop``'s distribution from uniform draws ``u [B, 4]``:
    ``(top-left [B, 2], size [B, 2])`` in pixels (x, y). A box that the drawn area and ratio
    would make larger than the image is clipped to it (torchvision instead draws again, up
    to ten times, then takes a centre crop)."""
    h, w = size
    low, high = ranges.scale
    area = (low + u[:, 0] * (high - low)) * (h * w)
    log_low, log_high = math.log(ranges.ratio[0]), math.log(ranges.ratio[1])
    ratio = torch.exp(log_low + u[:, 1] * (log_high - log_low))
    box_w = torch.sqrt(area * ratio).clamp(1.0, w)
    box_h = torch.sqrt(area / ratio).clamp(1.0, h)
    x0 = u[:, 2] * (w - box_w)
    y0 = u[:, 3] * (h - box_h)
    return torch.stack([x0, y0], dim=1), torch.stack([box_w, box_h], dim=1)


def resized_crops(
    images: torch.Tensor, corner: torch.Tensor, box: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Each image's box (``corner [B, 2]``, ``box [B, 2]``: x, y pixels) resized to the whole
    image, mirrored left-right where ``flip [B]`` is true: one ``affine_grid`` + bilinear
    ``grid_sample`` for the batch. ``[B, C, H, W]`` float -> the same shape. The boxes may live
    on another device than the images (the generator's): the matrices are moved."""
    b, c, h, w = images.shape
    full = torch.tensor([w, h], dtype=box.dtype, device=box.device)
    half = box / full  # the box's half-size in normalised units (the image spans [-1, 1])
    centre = (corner + box / 2) / full * 2 - 1
    sign = torch.where(flip, -1.0, 1.0).to(box.dtype)
    zero = torch.zeros_like(sign)
    theta = torch.stack(
        [
            torch.stack([half[:, 0] * sign, zero, centre[:, 0]], dim=1),
            torch.stack([zero, half[:, 1], centre[:, 1]], dim=1),
        ],
        dim=1,
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB ``[B, 3, H, W]`` -> ``[B, 1, H, W]`` (torchvision's weights)."""
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc = x.min(dim=1).values
    equal = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(equal, ones, maxc)
    cr_div = torch.where(equal, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = torch.stack(
        [
            torch.stack([v, q, p, p, t, v], dim=1),
            torch.stack([t, v, v, q, p, p], dim=1),
            torch.stack([p, p, t, v, v, q], dim=1),
        ],
        dim=1,
    )  # [B, 3, 6, H, W]
    index = i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return table.gather(2, index).squeeze(2)


def jitter_colour(
    x: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor,
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changed per image, in that order, with
    torchvision's formulas (``transforms.v2.functional.adjust_*``; a test checks them against
    it): ``x`` ``[B, C, H, W]`` in 0..1, each factor ``[B]``. Grey images (C = 1) get
    brightness and contrast only."""
    x = (x * brightness.view(-1, 1, 1, 1)).clamp(0, 1)
    grey = _grey(x) if x.shape[1] == 3 else x
    x = _blend(x, grey.mean(dim=(1, 2, 3), keepdim=True), contrast)
    if x.shape[1] != 3:
        return x
    x = _blend(x, _grey(x), saturation)
    hsv = _rgb_to_hsv(x)
    shifted = torch.remainder(hsv[:, 0] + hue.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack([shifted, hsv[:, 1], hsv[:, 2]], dim=1))


def random_photo(
    images: torch.Tensor, generator: torch.Generator, ranges: PhotoRanges = PhotoRanges()
) -> torch.Tensor:
    """``--augment photo``: each image of ``[B, C, H, W]`` (pixel values 0..255) gets its own
    random resized crop, horizontal flip and colour jitter (`PhotoRanges`), all on the images'
    device in a few batched operations; parameters are drawn from `generator` on its own device
    (a CPU generator serves CUDA images). torchvision's ``transforms.v2`` draw one set of
    parameters per call, which a batch would share; the formulas here are theirs. The output
    has the input's dtype (uint8 rounded back)."""
    if images.dim() != 4:
        raise ArgumentError(f"images must be [B, C, H, W], got shape {list(images.shape)}")
    b, _, h, w = images.shape
    if b == 0:
        return images.clone()
    u = torch.rand((b, 9), generator=generator, device=generator.device, dtype=torch.float64)
    corner, box = crop_boxes(u[:, :4], ranges, (h, w))
    flip = u[:, 4] < ranges.flip

    def factor(column: torch.Tensor, spread: float) -> torch.Tensor:
        return (1 - spread + column * 2 * spread).to(images.device, torch.float32)

    work = images.float() if not images.dtype.is_floating_point else images
    x = resized_crops(work / 255.0, corner.float(), box.float(), flip)
    x = jitter_colour(
        x,
        factor(u[:, 5], ranges.brightness),
        factor(u[:, 6], ranges.contrast),
        factor(u[:, 7], ranges.saturation),
        ((2 * u[:, 8] - 1) * ranges.hue).to(images.device, torch.float32),
    )
    out = x * 255.0
    if images.dtype.is_floating_point:
        return out.to(images.dtype)
    info = torch.iinfo(images.dtype)
    return out.round_().clamp_(info.min, info.max).to(images.dtype)


def batch_augmentation(
    name: str, generator: torch.Generator
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The training augmentation ``--augment NAME`` as a function of a float batch
    ``[B, C, H, W]`` (0..255) drawing from `generator`: None for ``none``, `random_affine`
    (Koch et al.'s ranges) for ``affine``, `random_photo` for ``photo``."""
    if name == "none":
        return None
    if name == "affine":
        return lambda x: random_affine(x, generator, AffineRanges())
    if name == "photo":
        return lambda x: random_photo(x, generator, PhotoRanges())
    raise ArgumentError(f"--augment {name!r}: expected none, affine or photo")
