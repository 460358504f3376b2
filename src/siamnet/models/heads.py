"""Heads: turn two embeddings into a similarity score, higher meaning "more alike".

- `L1Head`: |e₁ − e₂| → linear → logit, as in the blog post and Koch et al. (2015); trained
  with BCE-with-logits, its score is the sigmoid probability of "same".
- `DistanceHead`: the negative Euclidean distance, for contrastive, triplet and prototypical
  training; its score is ``-distance``.
- `CosineHead`: cosine similarity.

Every head scores aligned pairs (``forward``) and all pairs of two sets (``pairwise``), so
evaluation and inference work the same whatever the loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from siamnet.errors import ArgumentError


class PairHead(nn.Module):
    """Base class. ``forward(a [B, D], b [B, D]) -> [B]`` raw scores; ``pairwise(q [Q, D],
    s [S, D]) -> [Q, S]``; ``to_score(raw)`` maps raw scores to the user-facing score."""

    kind = "base"

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head output -> the score the threshold applies to (identity by default)."""
        return raw


class L1Head(PairHead):
    """``logit = w · |a − b| + b₀``; score ``sigmoid(logit)`` in (0, 1)."""

    kind = "l1"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[B, D], [B, D]`` -> logits ``[B]``."""
        return self.fc(torch.abs(a - b)).squeeze(-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor, chunk: int = 1 << 24) -> torch.Tensor:
        """Logits for every (query, support) pair, ``[Q, D], [S, D]`` -> ``[Q, S]``.

        Computed in query chunks so that the ``[q, S, D]`` difference tensor stays under
        `chunk` elements.
        """
        weight = self.fc.weight.squeeze(0)
        rows = max(1, chunk // max(1, s.shape[0] * s.shape[1]))
        out = [
            (torch.abs(q[i : i + rows, None, :] - s[None, :, :]) * weight).sum(-1)
            for i in range(0, q.shape[0], rows)
        ]
        return torch.cat(out) + self.fc.bias if out else q.new_zeros(0, s.shape[0])

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)


class DistanceHead(PairHead):
    """Score ``-‖a − b‖₂`` (no parameters)."""

    kind = "euclidean"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.vector_norm(a - b, dim=-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return -pairwise_distances(q, s)


class CosineHead(PairHead):
    """Score ``cos(a, b)`` in [-1, 1] (no parameters)."""

    kind = "cosine"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return F.normalize(q, dim=-1) @ F.normalize(s, dim=-1).T


def pairwise_distances(q: torch.Tensor, s: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Euclidean distances ``[Q, D], [S, D]`` -> ``[Q, S]`` via the Gram matrix, clamped at 0."""
    sq = (q * q).sum(-1, keepdim=True) - 2.0 * (q @ s.T) + (s * s).sum(-1)[None, :]
    sq = sq.clamp_min(0.0)
    return sq if squared else sq.sqrt()


HEADS = {"l1": L1Head, "euclidean": DistanceHead, "cosine": CosineHead}


def build_head(kind: str, dim: int) -> PairHead:
    """A head by kind (``l1``, ``euclidean``, ``cosine``) for embeddings of size `dim`."""
    if kind == "l1":
        return L1Head(dim)
    if kind in HEADS:
        return HEADS[kind]()
    raise ArgumentError(f"head {kind!r}: expected one of {', '.join(HEADS)}")
