"""Objectives on balanced same/different pairs: BCE on the L1 head, and contrastive loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import PairSampler
from siamnet.models.losses import bce_loss, contrastive_loss
from siamnet.objectives.base import Batch, Fetch, Objective, Sampler

if TYPE_CHECKING:
    from siamnet.train.config import TrainConfig


class PairObjective(Objective):
    """Base of the pair objectives: batches of ``left``, ``right`` indices ``[B]`` and a
    ``target`` ``[B]`` (1 = same class), half of them positive."""

    accuracy_label = "train batches (pairs)"
    image_keys = ("left", "right")

    def sampler(self, cfg: TrainConfig, train: LabeledImages) -> Sampler:
        pairs = PairSampler(train.labels)

        def draw(generator: torch.Generator) -> Batch:
            left, right, target = pairs.sample_indices(cfg.batch_size, generator)
            return {"left": left, "right": right, "target": target}

        return draw


class BCEObjective(PairObjective):
    """Binary cross-entropy on the L1 head's logits (the blog post, Koch et al. 2015);
    accuracy: the logit's sign against the target."""

    name = "bce"
    head = "l1"

    def step(
        self, cfg: TrainConfig, model: nn.Module, batch: Batch, fetch: Fetch, labels: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        target = batch["target"].to(labels.device)
        logits = model(fetch(batch["left"]), fetch(batch["right"]))
        acc = ((logits.detach() > 0).float() == target).float().mean().item()
        return bce_loss(logits.float(), target), acc


class ContrastiveObjective(PairObjective):
    """Contrastive loss (Hadsell et al. 2006) on L2-normalised embeddings; accuracy: distance
    below half the margin against the target."""

    name = "contrastive"
    embedding_norm = True
    default_margin = 1.0

    def default_threshold(self, margin: float) -> tuple[float, str] | None:
        """Half the margin: pairs closer than that count as "same" in the batch accuracy."""
        words = f"distance {margin / 2:g} (half the margin {margin:g}), the fixed default"
        return -margin / 2, words

    def step(
        self, cfg: TrainConfig, model: nn.Module, batch: Batch, fetch: Fetch, labels: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        target = batch["target"].to(labels.device)
        n = len(target)
        emb = model(fetch(torch.cat([batch["left"], batch["right"]]))).float()
        a, b = emb[:n], emb[n:]
        d = torch.linalg.vector_norm(a.detach() - b.detach(), dim=-1)
        acc = ((d < cfg.margin / 2).float() == target).float().mean().item()
        return contrastive_loss(a, b, target, cfg.margin), acc
