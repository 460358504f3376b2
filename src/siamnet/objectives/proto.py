"""Prototypical loss on N-way K-shot episodes (Snell, Swersky & Zemel 2017)."""

from __future__ import annotations

import torch
from torch import nn

from siamnet.data.episodes import EpisodeSampler
from siamnet.data.labeled import LabeledImages
from siamnet.models.losses import prototypical_loss
from siamnet.objectives.base import Batch, Fetch, Objective, ObjectiveSettings, Sampler, base_module


class ProtoObjective(Objective):
    """Episodes of ``--ways`` classes with ``--shots`` support and ``--queries`` query images
    each; softmax over negative squared distances to the class prototypes, with a learned
    temperature by default; accuracy: queries classified right."""

    name = "proto"
    accuracy_label = "train episodes (queries)"
    rotate_classes_by_default = True  # measured with this loss only (bench/RESULTS.md)
    image_keys = ("support", "query")

    def learned_temperature(self, settings: ObjectiveSettings) -> bool:
        return settings.temperature == "learned"

    def sampler(self, settings: ObjectiveSettings, train: LabeledImages) -> Sampler:
        ways = min(settings.ways, train.num_classes)
        queries = queries_that_fit(train.labels, settings.shots, settings.queries)
        episodes = EpisodeSampler(
            train.labels, ways, settings.shots, queries, skip_small_classes=True
        )

        def draw(generator: torch.Generator) -> Batch:
            ep = episodes.sample(generator)
            return {
                "support": ep.support,
                "support_labels": ep.support_labels,
                "query": ep.query,
                "query_labels": ep.query_labels,
            }

        return draw

    def step(
        self,
        settings: ObjectiveSettings,
        model: nn.Module,
        batch: Batch,
        fetch: Fetch,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        dev = labels.device
        ns, nq = len(batch["support"]), len(batch["query"])
        emb = model(fetch(torch.cat([batch["support"], batch["query"]]))).float()
        base = base_module(model)
        temp = base.log_temperature.exp() if base.log_temperature is not None else 1.0
        ways = int(batch["support_labels"].max()) + 1
        loss, acc = prototypical_loss(
            emb[:ns],
            batch["support_labels"].to(dev),
            emb[ns : ns + nq],
            batch["query_labels"].to(dev),
            ways,
            temp,
        )
        return loss, acc.item()


def queries_that_fit(labels: torch.Tensor, shots: int, queries: int) -> int:
    """``--queries``, lowered (to 1 at least) until two classes have ``shots + queries``
    examples: a small data set (5 images a class, 3 left after validation) still trains on
    episodes instead of being refused. `labels` int64 ``[N]``."""
    counts = torch.bincount(labels).sort(descending=True).values
    second = int(counts[1]) if len(counts) > 1 else 0
    return max(1, min(queries, second - shots))
