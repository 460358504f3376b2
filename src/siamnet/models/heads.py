"""Heads: turn two embeddings into a similarity score, larger meaning "more alike".

- `L1Head`: |e₁ − e₂| → linear → logit, as in the blog post and Koch et al. (2015); trained
  with BCE-with-logits, its score is the sigmoid probability of "same".
- `DistanceHead`: the negative Euclidean distance, for contrastive, triplet and prototypical
  training; its score is ``-distance``.
- `CosineHead`: cosine similarity.

A head is the one place that knows how to score: aligned pairs (``forward``), all pairs of two
sets (``pairwise``, with optional leading batch dimensions), and queries against a gallery it
prepared once (``prepare`` + ``prepared_scores``). Evaluation, inference and gallery search
call these and never ask which head they hold (as pytorch-metric-learning's ``BaseDistance``).
To add a head, subclass `PairHead`, give it a ``kind`` and register it in `HEADS`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from siamnet.errors import ArgumentError


class PairHead(nn.Module):
    """The head/distance interface.

    Raw scores are what the head computes (logits for ``l1``); ``to_score`` maps them to the
    user-facing score that a threshold applies to. Every score is "larger = more similar".
    """

    kind = "base"
    #: What the user-facing score is, in words (for reports), and in a word or two (for axes).
    meaning = "similarity score"
    axis_label = "score"
    #: Larger scores mean more similar (every built-in head; kept explicit for new ones).
    larger_is_similar = True
    #: Whether the head has weights (a gallery search then needs the model's own head).
    has_weights = False
    #: The metric FAISS indexes this head's `search_vectors` with (``l2``, ``ip``, ``l1``).
    faiss_metric = ""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Raw scores of aligned pairs ``[..., D], [..., D]`` -> ``[...]``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Raw scores of every pair ``[..., Q, D], [..., S, D]`` -> ``[..., Q, S]``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head output -> the score the threshold applies to (identity by default)."""
        return raw

    def distance(self, score: float) -> float | None:
        """The embedding distance a user-facing score stands for (None if it is not one)."""
        return None

    #: The threshold the head's score has before calibration, with its meaning in words
    #: (None: the scale is the objective's, see `siamnet.objectives.Objective.default_threshold`).
    default_threshold: tuple[float, str] | None = None

    # --- a gallery prepared once, searched many times ---------------------------------------

    def prepare(self, items: torch.Tensor) -> Any:
        """Whatever makes `prepared_scores` fast against items ``[N, D]`` (default: them)."""
        return items

    def prepared_scores(self, q: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Keys ``[Q, N]`` ordered as the raw scores of queries ``[Q, D]`` against prepared
        items; `key_to_score` turns a key into the user-facing score."""
        return self.pairwise(q, prepared)

    def key_to_score(self, key: torch.Tensor) -> torch.Tensor:
        """`prepared_scores` keys -> user-facing scores (default: `to_score`)."""
        return self.to_score(key)

    # --- FAISS -------------------------------------------------------------------------------

    def search_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors ``[N, D']`` that FAISS indexes with `faiss_metric` for this head."""
        raise ArgumentError(f"FAISS search does not support the {self.kind!r} head")

    def faiss_to_score(self, values: torch.Tensor) -> torch.Tensor:
        """FAISS result values -> user-facing scores."""
        return values


def weighted_l1(
    q: torch.Tensor, s: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """``w · |q − s| + b`` for every pair, ``[..., Q, D], [..., S, D]`` -> ``[..., Q, S]``.

    The one all-pairs L1 kernel: the weights are split by sign into two plain L1 distances of
    rescaled embeddings, ``cdist₁(q·w⁺, s·w⁺) − cdist₁(q·|w⁻|, s·|w⁻|)``, so it runs in
    `torch.cdist` without a ``[Q, S, D]`` tensor.
    """
    return weighted_l1_parts(q, l1_parts(s, weight), weight, bias)


def l1_parts(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [..., N, D]`` rescaled by the positive and by the (negated) negative weights
    ``[D]``: ``([..., N, D⁺], [..., N, D⁻])``."""
    w = weight.detach().to(x.dtype)
    positive = w > 0
    return x[..., positive] * w[positive], x[..., ~positive] * -w[~positive]


def weighted_l1_parts(
    q: torch.Tensor,
    parts: tuple[torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """`weighted_l1` of queries ``[..., Q, D]`` against items already split by `l1_parts`."""
    qp, qn = l1_parts(q, weight)
    sp, sn = parts
    # Out of place, so autograd can keep cdist's output; no torch.broadcast_shapes (its first
    # call imports torch._refs, about half a second).
    if sp.shape[-1] and sn.shape[-1]:
        out = torch.cdist(qp, sp, p=1) - torch.cdist(qn, sn, p=1)
    elif sp.shape[-1]:
        out = torch.cdist(qp, sp, p=1)
    elif sn.shape[-1]:
        out = -torch.cdist(qn, sn, p=1)
    else:  # D = 0: zeros of the broadcast shape
        out = q[..., :0] @ sp.transpose(-1, -2)
    return out + bias


class L1Head(PairHead):
    """``logit = w · |a − b| + b₀``; score ``sigmoid(logit)`` in (0, 1)."""

    kind = "l1"
    meaning = "probability of 'same' (sigmoid of the L1 head)"
    axis_label = "probability of 'same'"
    default_threshold = (0.5, "probability 0.5, the fixed default of the l1 head")
    has_weights = True
    faiss_metric = "l1"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    @property
    def weight(self) -> torch.Tensor:
        """The weights ``[D]`` of ``|a − b|``."""
        return self.fc.weight.detach().squeeze(0)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[..., D], [..., D]`` -> logits ``[...]``."""
        return self.fc(torch.abs(a - b)).squeeze(-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Logits for every (query, support) pair, ``[..., Q, D], [..., S, D]`` ->
        ``[..., Q, S]`` (`weighted_l1`)."""
        return weighted_l1(q, s, self.weight, self.fc.bias.detach())

    def prepare(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return l1_parts(items, self.weight)

    def prepared_scores(self, q: torch.Tensor, prepared: Any) -> torch.Tensor:
        return weighted_l1_parts(q, prepared, self.weight, self.fc.bias.detach())

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)

    def search_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors ``[N, D⁻]`` whose L1 distance proposes candidates: the embeddings rescaled
        by the negative weights (all of ``items`` if none is negative)."""
        negative = l1_parts(items, self.weight)[1]
        return negative if negative.shape[-1] else items


class DistanceHead(PairHead):
    """Score ``-‖a − b‖₂`` (no parameters)."""

    kind = "euclidean"
    meaning = "minus the Euclidean distance between embeddings"
    axis_label = "−distance"
    faiss_metric = "l2"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.vector_norm(a - b, dim=-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return -pairwise_distances(q, s)

    def distance(self, score: float) -> float | None:
        return -score

    def prepare(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return items, (items * items).sum(-1)

    def prepared_scores(self, q: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Negated squared distances ``[Q, N]`` (same order as ``-distance``)."""
        g, g_sq = prepared
        return 2.0 * (q @ g.T) - g_sq - (q * q).sum(-1, keepdim=True)

    def key_to_score(self, key: torch.Tensor) -> torch.Tensor:
        return -(-key).clamp_min(0.0).sqrt()

    def search_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return items

    def faiss_to_score(self, values: torch.Tensor) -> torch.Tensor:
        return -values.clamp_min(0.0).sqrt()  # FAISS L2 gives squared distances


class CosineHead(PairHead):
    """Score ``cos(a, b)`` in [-1, 1] (no parameters)."""

    kind = "cosine"
    meaning = "cosine similarity of embeddings"
    axis_label = "cosine"
    default_threshold = (0.0, "cosine 0, the fixed default of the cosine head")
    faiss_metric = "ip"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return F.normalize(q, dim=-1) @ F.normalize(s, dim=-1).transpose(-1, -2)

    def distance(self, score: float) -> float | None:
        return 1.0 - score

    def prepare(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(items, dim=-1)

    def prepared_scores(self, q: torch.Tensor, prepared: Any) -> torch.Tensor:
        return F.normalize(q, dim=-1) @ prepared.T

    def search_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(items, dim=-1)


def pairwise_distances(q: torch.Tensor, s: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Euclidean distances ``[..., Q, D], [..., S, D]`` -> ``[..., Q, S]`` via the Gram
    matrix, clamped at 0."""
    gram = q @ s.transpose(-1, -2)
    sq = (q * q).sum(-1, keepdim=True) - 2.0 * gram + (s * s).sum(-1).unsqueeze(-2)
    sq = sq.clamp_min(0.0)
    return sq if squared else sq.sqrt()


#: Head kinds by name; a new head registers here to be rebuilt from a checkpoint.
HEADS: dict[str, type[PairHead]] = {"l1": L1Head, "euclidean": DistanceHead, "cosine": CosineHead}


def build_head(kind: str, dim: int) -> PairHead:
    """A head by kind (``l1``, ``euclidean``, ``cosine``) for embeddings of size `dim`."""
    if kind not in HEADS:
        raise ArgumentError(f"head {kind!r}: expected one of {', '.join(HEADS)}")
    cls = HEADS[kind]
    return cls(dim) if cls.has_weights else cls()
