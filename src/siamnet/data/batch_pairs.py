"""Pairs inside P×K batches: every image of a batch is embedded once and serves in many pairs.

The blog post draws each pair independently, so a batch of B pairs costs 2B embeddings for B
pairs. Drawing P classes × K examples instead and pairing the images of the batch with each
other gives P·K(K−1)/2 positive pairs and K²·P(P−1)/2 negative pairs from P·K embeddings, the
"all pairs in the batch" practice of metric learning (Hadsell et al. 2006 on the pairs;
Hermans et al. 2017 and pytorch-metric-learning on P×K batches). Positives and negatives are
weighted to count half each, as in the post's balanced batches.
"""

from __future__ import annotations

import torch

from siamnet.data.pairs import PKSampler
from siamnet.errors import ArgumentError

#: At most this many pairs are scored per batch (all positives first, then a uniform sample of
#: the negatives), so the head's ``[pairs, D]`` difference tensor stays bounded.
MAX_PAIRS = 8192


class BatchPairSampler:
    """P×K batches of image indices with the positions of their pairs.

    Args:
        labels: int64 ``[N]``.
        batch_size: images per batch (P = ``batch_size // examples_per_class``, at least 2,
            capped at the classes with two or more examples).
        examples_per_class: K, at least 2.
        max_pairs: the most pairs a batch scores (see `MAX_PAIRS`).
    """

    def __init__(
        self,
        labels: torch.Tensor,
        batch_size: int,
        examples_per_class: int,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 2:
            raise ArgumentError(f"max_pairs must be an integer >= 2, got {max_pairs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 4:
            raise ArgumentError(
                f"--batch-size {batch_size!r}: in-batch pairs need at least 4 images"
            )
        self.pk = PKSampler(labels, max(2, batch_size // examples_per_class), examples_per_class)
        p, k = self.pk.classes_per_batch, self.pk.examples_per_class
        i, j = torch.triu_indices(p * k, p * k, 1)
        same = (i // k) == (j // k)  # the batch holds K consecutive images per class
        self.positives = torch.stack([i[same], j[same]])  # [2, P·K(K−1)/2]
        self.negatives = torch.stack([i[~same], j[~same]])  # [2, K²·P(P−1)/2]
        self.max_pairs = max_pairs
        self.num_positive = min(self.positives.shape[1], max_pairs // 2)
        self.num_negative = min(self.negatives.shape[1], max_pairs - self.num_positive)
        # the same for every batch: negatives first, then positives
        self.target = torch.cat([torch.zeros(self.num_negative), torch.ones(self.num_positive)])
        self.weight = balance_weights(self.target)

    @property
    def batch_size(self) -> int:
        """Images per batch (P·K)."""
        return self.pk.batch_size

    @property
    def pairs_per_batch(self) -> int:
        return self.num_positive + self.num_negative

    def sample(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``index`` int64 ``[P·K]`` (example indices, K per class in a row); ``pair_left``,
        ``pair_right`` int64 ``[M]`` (positions in ``index``); ``target`` float32 ``[M]`` (1 =
        same class), negatives first; ``weight`` float32 ``[M]`` (`balance_weights`)."""
        index = self.pk.sample_indices(generator)
        parts = []
        for pairs, n in ((self.negatives, self.num_negative), (self.positives, self.num_positive)):
            if n < pairs.shape[1]:
                keep = torch.randperm(pairs.shape[1], generator=generator)[:n]
                pairs = pairs[:, keep]
            parts.append(pairs)
        left, right = torch.cat(parts, dim=1)
        return {
            "index": index,
            "pair_left": left,
            "pair_right": right,
            "target": self.target,
            "weight": self.weight,
        }


def balance_weights(target: torch.Tensor) -> torch.Tensor:
    """Per-pair weights ``[M]`` summing to 1, half on the positives and half on the negatives
    (all on one side when the other is empty)."""
    positive = target > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.full_like(target, 1.0 / max(1, len(target)))
    return torch.where(positive, 0.5 / n_pos, 0.5 / n_neg).to(target.dtype)
