"""Proxy objectives: one learned proxy per training class, softmax over scaled cosines.

- ``normsoftmax``: the plain normalised softmax (NormFace, Wang et al. 2017; Zhai & Wu 2019,
  "Classification is a Strong Baseline for Deep Metric Learning").
- ``cosface``: an additive margin on the target cosine, ``cos θ − m`` (Wang et al. 2018,
  "CosFace: Large Margin Cosine Loss for Deep Face Recognition").
- ``arcface``: an additive margin on the target angle, ``cos(θ + m)`` (Deng et al. 2019,
  "ArcFace: Additive Angular Margin Loss for Deep Face Recognition").

As pytorch-metric-learning's ``NormalizedSoftmaxLoss``, ``CosFaceLoss`` and ``ArcFaceLoss``.
Batches are ``--batch-size`` images drawn uniformly; embeddings and proxies are unit length
and the model is scored by the cosine head, so a trained model needs no proxy at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from siamnet.data.labeled import LabeledImages
from siamnet.models.losses import proxy_softmax_loss
from siamnet.objectives.base import (
    Batch,
    Fetch,
    Objective,
    ObjectiveSettings,
    Sampler,
    objective_parameters,
)


class ClassProxies(nn.Module):
    """One learned vector per training class: ``weight`` ``[K, D]``."""

    def __init__(self, classes: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim, generator=generator) / dim**0.5)


class ProxyObjective(Objective):
    """Softmax over ``--scale`` × the cosines to the class proxies, with a ``--margin`` of
    `margin_kind` on the target class; accuracy: the nearest proxy is the image's class."""

    head = "cosine"
    embedding_norm = True
    rotate_classes_by_default = True  # rotated copies are new classes, as for episodes
    image_keys = ("index",)
    accuracy_label = "train batches (nearest proxy)"
    default_scale = 16.0
    #: Which margin (`siamnet.models.losses.PROXY_MARGINS`).
    margin_kind = "none"

    def default_threshold(self, margin: float) -> tuple[float, str] | None:
        return None  # the cosine head's own (0) applies

    def training_parameters(
        self,
        settings: ObjectiveSettings,
        train: LabeledImages,
        dim: int,
        generator: torch.Generator,
    ) -> nn.Module:
        return ClassProxies(train.num_classes, dim, generator)

    def sampler(self, settings: ObjectiveSettings, train: LabeledImages) -> Sampler:
        count, size = len(train), settings.batch_size
        return lambda generator: {"index": torch.randint(0, count, (size,), generator=generator)}

    def step(
        self,
        settings: ObjectiveSettings,
        model: nn.Module,
        batch: Batch,
        fetch: Fetch,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        index = batch["index"].to(labels.device)
        emb = model(fetch(index)).float()
        y = labels[index]
        proxies = objective_parameters(model).weight.float()
        margin = settings.margin if self.margin_kind != "none" else 0.0
        scale = settings.scale if settings.scale is not None else self.default_scale
        loss, cos = proxy_softmax_loss(emb, proxies, y, scale, margin, self.margin_kind)
        return loss, (cos.argmax(1) == y).float().mean().item()


class NormSoftmaxObjective(ProxyObjective):
    """The normalised softmax: no margin."""

    name = "normsoftmax"


class CosFaceObjective(ProxyObjective):
    """CosFace: the target cosine minus ``--margin`` (default 0.35, as the paper's)."""

    name = "cosface"
    margin_kind = "cosine"
    default_margin = 0.35


class ArcFaceObjective(ProxyObjective):
    """ArcFace: ``--margin`` radians added to the target angle (default 0.5, as the paper's)."""

    name = "arcface"
    margin_kind = "angular"
    default_margin = 0.5
