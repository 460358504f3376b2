"""Objectives on balanced same/different pairs: BCE on the L1 head, and contrastive loss.

Pairs come two ways (``--pairs``): ``sampled``, each pair drawn on its own as in the blog post
(2 embeddings per pair), or ``batch``, every pair inside a P×K batch
(`siamnet.data.batch_pairs`: P·K embeddings for up to `MAX_PAIRS` pairs, positives and negatives
weighted half each).
"""

from __future__ import annotations

import torch
from torch import nn

from siamnet.data.batch_pairs import BatchPairSampler
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import PairSampler
from siamnet.errors import ArgumentError
from siamnet.models.losses import bce_loss, contrastive_loss
from siamnet.objectives.base import Batch, Fetch, Objective, ObjectiveSettings, Sampler, base_module


class PairObjective(Objective):
    """Base of the pair objectives: batches of ``left``, ``right`` indices ``[B]`` and a
    ``target`` ``[B]`` (1 = same class), half of them positive."""

    accuracy_label = "train batches (pairs)"
    image_keys = ("left", "right", "index")

    def sampler(self, settings: ObjectiveSettings, train: LabeledImages) -> Sampler:
        if settings.pairs == "batch":
            in_batch = BatchPairSampler(
                train.labels, settings.batch_size, settings.examples_per_class
            )
            return in_batch.sample
        if settings.pairs != "sampled":
            raise ArgumentError(f"--pairs {settings.pairs!r}: expected sampled or batch")
        pairs = PairSampler(train.labels)

        def draw(generator: torch.Generator) -> Batch:
            left, right, target = pairs.sample_indices(settings.batch_size, generator)
            return {"left": left, "right": right, "target": target}

        return draw

    @staticmethod
    def embedded_pairs(
        model: nn.Module, batch: Batch, fetch: Fetch, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embeddings ``[M, D]`` of the left and right images of the batch's pairs, the target
        ``[M]`` and the pair weights ``[M]`` (None for sampled pairs, which count alike); a P×K
        batch is embedded once, its images shared by its pairs."""
        target = batch["target"].to(device)
        if "index" in batch:
            emb = model(fetch(batch["index"].to(device)))
            left, right = batch["pair_left"].to(device), batch["pair_right"].to(device)
            return emb[left], emb[right], target, batch["weight"].to(device)
        n = len(target)
        emb = model(fetch(torch.cat([batch["left"], batch["right"]])))
        return emb[:n], emb[n:], target, None


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> float:
    """The mean of `values` ``[M]``, or their `weight`-weighted sum (weights summing to 1)."""
    return float(values.mean() if weight is None else (weight * values).sum())


class BCEObjective(PairObjective):
    """Binary cross-entropy on the L1 head's logits (the blog post, Koch et al. 2015);
    accuracy: the logit's sign against the target."""

    name = "bce"
    head = "l1"

    def step(
        self,
        settings: ObjectiveSettings,
        model: nn.Module,
        batch: Batch,
        fetch: Fetch,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        if "index" not in batch:
            target = batch["target"].to(labels.device)
            logits = model(fetch(batch["left"]), fetch(batch["right"]))
            acc = ((logits.detach() > 0).float() == target).float().mean().item()
            return bce_loss(logits.float(), target), acc
        a, b, target, weight = self.embedded_pairs(model, batch, fetch, labels.device)
        logits = base_module(model).head(a, b).float()
        right = ((logits.detach() > 0).float() == target).float()
        return bce_loss(logits, target, weight), weighted_mean(right, weight)


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
        self,
        settings: ObjectiveSettings,
        model: nn.Module,
        batch: Batch,
        fetch: Fetch,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        a, b, target, weight = self.embedded_pairs(model, batch, fetch, labels.device)
        a, b = a.float(), b.float()
        d = torch.linalg.vector_norm(a.detach() - b.detach(), dim=-1)
        right = ((d < settings.margin / 2).float() == target).float()
        return contrastive_loss(a, b, target, settings.margin, weight), weighted_mean(right, weight)
