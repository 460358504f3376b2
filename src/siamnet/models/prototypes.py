"""A labelled support set seen by class: class prototypes and the score of a query per class.

The one home of these two primitives, used by the prototypical loss (`siamnet.models.losses`),
inference (`siamnet.infer`) and N-way K-shot evaluation (`siamnet.evaluate.fewshot`). Every
function takes optional leading batch dimensions (``[E, ...]``, one per episode), and labels
are class indices ``0..K-1``; a label outside that range is one `DataError`.
"""

from __future__ import annotations

import torch

from siamnet.errors import ArgumentError, DataError
from siamnet.models.heads import PairHead

#: How a query is scored against a class (see `class_scores`).
SCORINGS = ("mean", "prototype")


def check_scoring(scoring: str) -> str:
    """`scoring` if it is one of `SCORINGS`; `ArgumentError` otherwise."""
    if scoring not in SCORINGS:
        raise ArgumentError(f"scoring {scoring!r}: expected 'mean' or 'prototype'")
    return scoring


def check_labels(items: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    """`labels` ``[..., S]`` must label the ``S`` items of `items` ``[..., S, D]`` and lie in
    ``0..classes-1``."""
    if items.dim() < 2 or labels.shape != items.shape[:-1]:
        raise DataError(
            f"support set: embeddings {list(items.shape)} and labels {list(labels.shape)} do "
            "not match ([..., S, D] and [..., S])"
        )
    if labels.numel():
        lo, hi = torch.aminmax(labels)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= classes:
            raise DataError(f"support set: labels must lie in 0..{classes - 1}, found {lo}..{hi}")


def class_counts(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Items per class ``[..., K]`` of labels ``[..., S]`` (zero for a class with none)."""
    counts = torch.zeros(*labels.shape[:-1], classes, dtype=dtype, device=labels.device)
    return counts.scatter_add(-1, labels, torch.ones_like(labels, dtype=dtype))


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Mean embedding of each class, ``[..., S, D]`` with labels ``[..., S]`` ->
    ``[..., K, D]`` (Snell et al. 2017); zeros for a class with no item."""
    check_labels(embeddings, labels, classes)
    shape = (*embeddings.shape[:-2], classes, embeddings.shape[-1])
    index = labels.unsqueeze(-1).expand_as(embeddings)
    sums = embeddings.new_zeros(shape).scatter_add(-2, index, embeddings)
    counts = class_counts(labels, classes, embeddings.dtype)
    return sums / counts.clamp_min(1.0).unsqueeze(-1)


def class_scores(
    head: PairHead,
    queries: torch.Tensor,
    support: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    scoring: str = "mean",
) -> torch.Tensor:
    """The user-facing score of each query for each class: queries ``[..., Q, D]``, support
    ``[..., S, D]`` labelled ``[..., S]`` -> ``[..., Q, K]``.

    ``"mean"``: the mean score against the class's support items (Koch et al. 2015 for K > 1).
    ``"prototype"``: the score against the class's mean embedding (Snell et al. 2017), meant
    for embedding heads (``euclidean``, ``cosine``). A class with no item scores ``-inf``, so
    it never wins.
    """
    check_scoring(scoring)
    if scoring == "prototype":
        prototypes = class_prototypes(support, labels, classes)  # [..., K, D]
        scores = head.to_score(head.pairwise(queries, prototypes))  # [..., Q, K]
        counts = class_counts(labels, classes, scores.dtype)
    else:
        check_labels(support, labels, classes)
        per_item = head.to_score(head.pairwise(queries, support))  # [..., Q, S]
        counts = class_counts(labels, classes, per_item.dtype)  # [..., K]
        index = labels.unsqueeze(-2).expand_as(per_item)
        sums = per_item.new_zeros(*per_item.shape[:-1], classes).scatter_add(-1, index, per_item)
        scores = sums / counts.clamp_min(1.0).unsqueeze(-2)
    return scores.masked_fill((counts == 0).unsqueeze(-2), float("-inf"))
