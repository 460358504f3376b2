"""The twin network: one shared backbone embeds both images, a head scores the pair."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from siamnet.errors import ArgumentError, CheckpointError
from siamnet.images import RESIZE_MODES
from siamnet.models.backbones import build_backbone, with_out_dim
from siamnet.models.heads import HEADS, PairHead, build_head

#: Test-time centring of a model (`ModelSpec.centring`): ``none``, no mean training embedding
#: is stored (a checkpoint written before the end of training, or before centring existed);
#: ``off``, one is stored and not applied; ``on``, embeddings are centred on it and scaled to
#: unit length.
CENTRING_STATES = ("none", "off", "on")


class Normalizer(nn.Module):
    """``x -> (x / scale - mean) / std`` per channel, on whatever device the model is on.

    Inputs are raw pixel values in 0..255 (uint8 or float); ``scale=1, mean=0, std=1`` keeps
    them raw, as the blog post does.
    """

    def __init__(self, mean: list[float], std: list[float], scale: float = 255.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` uint8 or float in 0..255 -> float ``[B, C, H, W]``."""
        x = x.to(self.mean.dtype) if not torch.is_floating_point(x) else x
        return (x / self.scale - self.mean) / self.std


@dataclass
class ModelSpec:
    """Everything needed to rebuild a `SiameseNet` from a checkpoint's JSON metadata."""

    model: str = "conv4"
    loss: str = "bce"
    in_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    head: str = "euclidean"
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"scale": 255.0, "mean": [0.0], "std": [1.0]}
    )
    embedding_norm: bool = False
    learned_temperature: bool = False
    #: how an image file is brought to `image_size` (`siamnet.images.RESIZE_MODES`); a
    #: checkpoint that does not record it was trained on stretched images (`from_dict`)
    resize: str = "crop"
    #: test-time centring on the mean training embedding (`CENTRING_STATES`)
    centring: str = "none"

    def __post_init__(self) -> None:
        # ``loss`` only records how the model was trained: rebuilding it needs no objective
        # (a checkpoint of one's own objective loads anywhere), so the head must be named
        if self.head not in HEADS:
            raise ArgumentError(f"head {self.head!r}: expected one of {', '.join(HEADS)}")
        if self.resize not in RESIZE_MODES:
            raise ArgumentError(
                f"resize {self.resize!r}: expected one of {', '.join(RESIZE_MODES)}"
            )
        if self.centring not in CENTRING_STATES:
            raise ArgumentError(
                f"centring {self.centring!r}: expected one of {', '.join(CENTRING_STATES)}"
            )
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """The spec a checkpoint's ``model_spec`` describes; one without ``resize`` predates
        cropping and keeps the geometry it was trained with (``stretch``)."""
        try:
            return cls(**{"resize": "stretch", **data})
        except (TypeError, ArgumentError) as exc:
            raise CheckpointError(f"model description in checkpoint is not usable: {exc}") from exc


class SiameseNet(nn.Module):
    """``embed(x [B, C, H, W]) -> [B, D]``; ``forward(a, b) -> [B]`` raw head scores.

    `backbone` is any module mapping normalised images to vectors; `head` a `PairHead`.
    Inputs are raw pixel values 0..255 (uint8 stays uint8 until it reaches the model's device).
    With ``embedding_norm`` the embeddings are L2-normalised (for margin losses).

    Test-time centring (SimpleShot's "CL2N", Wang et al. 2019): with `centring` on, an
    embedding has the mean training embedding ``embedding_mean`` ``[D]`` (a buffer, so it is
    saved, loaded and exported with the weights) subtracted and is then scaled to unit length.
    `set_embedding_mean` stores the mean; until then the buffer is absent and `centring` off.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: PairHead,
        normalizer: Normalizer | None = None,
        embedding_norm: bool = False,
        learned_temperature: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.normalizer = normalizer or Normalizer([0.0], [1.0], scale=255.0)
        self.embedding_norm = embedding_norm
        #: log of the softmax temperature of prototypical training (None when fixed at 1)
        self.log_temperature = nn.Parameter(torch.zeros(())) if learned_temperature else None
        #: the mean training embedding ``[D]`` (None: not computed); applied when `centring`
        self.register_buffer("embedding_mean", None)
        self.centring = False

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (0..255) -> embeddings ``[B, D]`` (centred and unit length with
        `centring`)."""
        e = self.backbone(self.normalizer(x))
        if self.embedding_norm:
            e = F.normalize(e, dim=-1)
        if self.centring and self.embedding_mean is not None:
            e = F.normalize(e - self.embedding_mean.to(e.dtype), dim=-1)
        return e

    def set_embedding_mean(self, mean: torch.Tensor | None) -> None:
        """Store the mean training embedding ``[D]`` (float32, on the model's device), or
        remove it (None, which turns `centring` off)."""
        if mean is None:
            self.embedding_mean, self.centring = None, False
            return
        device = next(self.parameters()).device
        self.embedding_mean = mean.detach().reshape(-1).to(device, torch.float32).clone()

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """Raw scores ``[B]`` of image pairs ``[B, C, H, W]`` (logits for the ``l1`` head);
        with `b` omitted, the embeddings ``[B, D]`` of `a` (so that DDP sees every pass)."""
        if b is None:
            return self.embed(a)
        e = self.embed(torch.cat([a, b]))
        return self.head(e[: len(a)], e[len(a) :])

    @torch.no_grad()
    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """User-facing similarity ``[B]`` (probability for ``l1``, ``-distance`` otherwise)."""
        return self.head.to_score(self(a, b))


def centring_state(model: SiameseNet) -> str:
    """``on`` (embeddings centred), ``off`` (a mean stored, not applied) or ``none`` (no mean
    training embedding in the model)."""
    if model.embedding_mean is None:
        return "none"
    return "on" if model.centring else "off"


@contextmanager
def centring_as(model: SiameseNet, centring: str | None) -> Iterator[str]:
    """Within the block `model` centres its embeddings (``on``) or not (``off``); None keeps
    its own setting. Yields the state in force (`centring_state`). ``on`` for a model that
    holds no mean training embedding is an `ArgumentError`."""
    if centring not in (None, "on", "off"):
        raise ArgumentError(f"--centring {centring!r}: expected on or off")
    if centring == "on" and model.embedding_mean is None:
        why = (
            f"its {model.head.kind} head learned weights on uncentred embeddings"
            if model.head.has_weights
            else "it was trained before centring existed"
        )
        raise ArgumentError(f"--centring on: this model holds no mean training embedding ({why})")
    before = model.centring
    if centring is not None:
        model.centring = centring == "on" and model.embedding_mean is not None
    try:
        yield centring_state(model)
    finally:
        model.centring = before


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` (``_orig_mod``) and DistributedDataParallel
    (``module``) wrappers, in whatever order and depth they were applied."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def build_model(spec: ModelSpec, backbone: nn.Module | None = None) -> SiameseNet:
    """A fresh, untrained `SiameseNet` as `spec` describes it; `backbone`, when given, is used
    as it is (one's own module) instead of the one `spec.model` names."""
    if backbone is None:
        backbone = build_backbone(spec.model, spec.in_channels, spec.image_size)
    else:
        backbone = with_out_dim(backbone, spec.in_channels, spec.image_size)
    head = build_head(spec.head, backbone.out_dim)
    norm = spec.normalization
    normalizer = Normalizer(list(norm["mean"]), list(norm["std"]), float(norm["scale"]))
    model = SiameseNet(
        backbone,
        head,
        normalizer,
        embedding_norm=spec.embedding_norm,
        learned_temperature=spec.learned_temperature,
    )
    if spec.centring != "none":  # the weights hold the mean; its shape is known now
        model.embedding_mean = torch.zeros(backbone.out_dim)
        model.centring = spec.centring == "on"
    return model
