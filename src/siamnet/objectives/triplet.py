"""Triplet margin loss with negatives mined inside P×K batches (FaceNet, Hermans et al.)."""

from __future__ import annotations

import torch
from torch import nn

from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import PKSampler
from siamnet.models.losses import triplet_loss
from siamnet.objectives.base import Batch, Fetch, Objective, ObjectiveSettings, Sampler


class TripletObjective(Objective):
    """Batches of P classes × K examples (``index`` ``[P·K]``); semi-hard or hard negatives
    (``--mining``); accuracy: each embedding's nearest neighbour in the batch has its class."""

    name = "triplet"
    embedding_norm = True
    accuracy_label = "train batches (nearest neighbour)"
    image_keys = ("index",)

    def sampler(self, settings: ObjectiveSettings, train: LabeledImages) -> Sampler:
        k = settings.examples_per_class
        pk = PKSampler(train.labels, max(2, settings.batch_size // k), k)
        return lambda generator: {"index": pk.sample_indices(generator)}

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
        with torch.no_grad():
            d = torch.cdist(emb, emb).fill_diagonal_(float("inf"))
            acc = (y[d.argmin(1)] == y).float().mean().item()
        return triplet_loss(emb, y, settings.margin, settings.mining), acc
