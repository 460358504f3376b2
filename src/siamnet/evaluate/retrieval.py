"""Retrieval metrics: every image a query against all the others (the SOP / CUB-200 / Cars-196
protocol), as metric-learning papers report them.

- Recall@K: the share of queries with at least one image of their class among their K nearest.
- R-precision (Musgrave et al. 2020, "A Metric Learning Reality Check"): with R the number of
  other images of the query's class, the share of the R nearest that are of its class.
- MAP@R: the mean over the query's R nearest of the precision at each correct one, divided by R.

A query whose class has no other image has nothing to find and is left out (as
pytorch-metric-learning's `AccuracyCalculator` does). Scores come from the model's head in chunks
of queries, so memory is ``chunk × N`` scores, not ``N × N``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from siamnet.models.heads import PairHead
from siamnet.presets import RETRIEVAL_KS

#: Queries scored at once: ``QUERY_CHUNK × N`` scores in memory.
QUERY_CHUNK = 512


@dataclass(frozen=True)
class RetrievalResult:
    """Recall@K per K, MAP@R and R-precision over `queries` queries (`lone` left out)."""

    recall_at_k: dict[int, float]
    map_at_r: float
    r_precision: float
    queries: int
    lone: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "recall_at_k": {str(k): v for k, v in self.recall_at_k.items()},
            "map_at_r": self.map_at_r,
            "r_precision": self.r_precision,
            "queries": self.queries,
            "lone_queries": self.lone,
        }


def retrieval_metrics(
    head: PairHead,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = RETRIEVAL_KS,
    chunk: int = QUERY_CHUNK,
) -> RetrievalResult | None:
    """Recall@K, MAP@R and R-precision of `embeddings` ``[N, D]`` with class `labels` ``[N]``,
    ranked by `head.pairwise`. None when no class has two images."""
    n = embeddings.shape[0]
    labels = labels.to(embeddings.device).long()
    relevant = torch.bincount(labels)[labels] - 1  # [N] other images of the query's class
    queries = int((relevant > 0).sum())
    if queries == 0 or n < 2:
        return None
    ks = sorted({int(k) for k in ks})
    depth = min(n - 1, max(max(ks), int(relevant.max())))
    rank = torch.arange(1, depth + 1, device=embeddings.device)  # [depth]
    found = torch.zeros(len(ks), dtype=torch.float64)
    map_sum = 0.0
    rprec_sum = 0.0
    with torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            scores = head.pairwise(embeddings[start:stop], embeddings).float()  # [c, N]
            if not head.larger_is_similar:
                scores = -scores
            rows = torch.arange(stop - start, device=scores.device)
            scores[rows, rows + start] = -torch.inf  # a query never finds itself
            nearest = scores.topk(depth, dim=1).indices  # [c, depth]
            hits = labels[nearest] == labels[start:stop, None]  # [c, depth]
            r = relevant[start:stop]
            keep = r > 0
            for i, k in enumerate(ks):
                found[i] += float(hits[:, : min(k, depth)].any(dim=1)[keep].sum())
            within_r = hits & (rank[None, :] <= r[:, None])  # correct and among the R nearest
            precision = within_r.cumsum(dim=1) / rank[None, :]
            r_safe = r.clamp(min=1)
            map_sum += float(((precision * within_r).sum(dim=1) / r_safe)[keep].sum())
            rprec_sum += float((within_r.sum(dim=1) / r_safe)[keep].sum())
    return RetrievalResult(
        recall_at_k={k: float(found[i]) / queries for i, k in enumerate(ks)},
        map_at_r=map_sum / queries,
        r_precision=rprec_sum / queries,
        queries=queries,
        lone=n - queries,
    )
