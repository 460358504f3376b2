"""The twin network: one shared backbone embeds both images, a head scores the pair."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from siamnet.errors import ArgumentError, CheckpointError
from siamnet.models.backbones import build_backbone, with_out_dim
from siamnet.models.heads import HEADS, PairHead, build_head


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

    def __post_init__(self) -> None:
        # ``loss`` only records how the model was trained: rebuilding it needs no objective
        # (a checkpoint of one's own objective loads anywhere), so the head must be named
        if self.head not in HEADS:
            raise ArgumentError(f"head {self.head!r}: expected one of {', '.join(HEADS)}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            return cls(**data)
        except (TypeError, ArgumentError) as exc:
            raise CheckpointError(f"model description in checkpoint is not usable: {exc}") from exc


class SiameseNet(nn.Module):
    """``embed(x [B, C, H, W]) -> [B, D]``; ``forward(a, b) -> [B]`` raw head scores.

    `backbone` is any module mapping normalised images to vectors; `head` a `PairHead`.
    Inputs are raw pixel values 0..255 (uint8 stays uint8 until it reaches the model's device).
    With ``embedding_norm`` the embeddings are L2-normalised (for margin losses).
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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (0..255) -> embeddings ``[B, D]``."""
        e = self.backbone(self.normalizer(x))
        return F.normalize(e, dim=-1) if self.embedding_norm else e

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
    return SiameseNet(
        backbone,
        head,
        normalizer,
        embedding_norm=spec.embedding_norm,
        learned_temperature=spec.learned_temperature,
    )
