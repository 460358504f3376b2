"""Losses for Siamese training, one function each.

- `bce_loss`: binary cross-entropy on the ``l1`` head's logits (the blog post, Koch et al. 2015).
- `contrastive_loss`: Hadsell, Chopra & LeCun (2006), "Dimensionality Reduction by Learning an
  Invariant Mapping".
- `triplet_loss`: Schroff et al. (2015, FaceNet) margin loss with batch-hard (Hermans et al.
  2017) or semi-hard negatives mined inside a P×K batch.
- `prototypical_loss`: Snell, Swersky & Zemel (2017), "Prototypical Networks for Few-shot
  Learning".
- `proxy_softmax_loss`: softmax over the cosines to one learned proxy per class, plain
  (NormFace, Wang et al. 2017; Zhai & Wu 2019, "Classification is a Strong Baseline for Deep
  Metric Learning"), with an additive cosine margin (CosFace, Wang et al. 2018) or an
  additive angular margin (ArcFace, Deng et al. 2019), as pytorch-metric-learning's
  ``NormalizedSoftmaxLoss``, ``CosFaceLoss`` and ``ArcFaceLoss``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from siamnet.models.heads import pairwise_distances
from siamnet.models.prototypes import class_prototypes


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Numerically stable BCE on logits ``[B]`` against targets ``[B]`` in {0, 1}, averaged
    (or summed with `weight` ``[B]``, weights that sum to 1)."""
    target = target.to(logits.dtype)
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    per_pair = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weight.to(logits.dtype) * per_pair).sum()


def contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    target: torch.Tensor,
    margin: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``½·y·d² + ½·(1−y)·max(0, m − d)²`` averaged (or summed with `weight` ``[B]``, weights
    that sum to 1), with ``d = ‖a − b‖`` for ``[B, D]`` embeddings and ``y = 1`` for same-class
    pairs."""
    d = torch.linalg.vector_norm(a - b, dim=-1)
    y = target.to(d.dtype)
    per_pair = 0.5 * (y * d.pow(2) + (1 - y) * F.relu(margin - d).pow(2))
    return per_pair.mean() if weight is None else (weight.to(d.dtype) * per_pair).sum()


def triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, mining: str = "semihard"
) -> torch.Tensor:
    """Triplet margin loss over all valid anchors of a batch ``[B, D]`` with labels ``[B]``.

    ``mining="hard"``: each anchor's farthest positive and nearest negative (batch-hard).
    ``mining="semihard"``: every anchor-positive pair with the nearest negative farther than the
    positive (``d_ap < d_an``); where none is, the farthest negative (as TensorFlow Addons does).
    """
    d = (pairwise_distances(embeddings, embeddings, squared=True) + 1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    if mining == "hard":
        d_ap = d.masked_fill(~positive, float("-inf")).amax(1)
        d_an = d.masked_fill(~negative, float("inf")).amin(1)
        valid = positive.any(1) & negative.any(1)
        if not valid.any():  # no anchor has both a positive and a negative
            return embeddings.sum() * 0.0
        return F.relu(d_ap - d_an + margin)[valid].mean()
    if mining != "semihard":
        raise ValueError(f"mining must be 'hard' or 'semihard', got {mining!r}")
    # d_ap[i, j] for anchor i, positive j; candidate negatives k: [B, B, B]
    d_ap = d[:, :, None]
    d_an = d[:, None, :]
    neg = negative[:, None, :]
    outside = neg & (d_an > d_ap)
    inf = torch.tensor(float("inf"), device=d.device, dtype=d.dtype)
    nearest_outside = torch.where(outside, d_an, inf).amin(2)
    farthest = torch.where(neg, d_an, -inf).amax(2)
    chosen = torch.where(outside.any(2), nearest_outside, farthest)
    valid = positive & negative.any(1, keepdim=True)
    losses = F.relu(d - chosen + margin)[valid]
    return losses.mean() if losses.numel() else embeddings.sum() * 0.0


def prototypical_loss(
    support: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    ways: int,
    temperature: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of a softmax over negative squared distances to class prototypes.

    `support` ``[N·K, D]`` with labels ``[N·K]`` in ``0..N-1``; `query` ``[N·Q, D]`` with labels.
    Returns ``(loss, accuracy)`` of the episode; logits are ``-d² / temperature``.
    """
    prototypes = class_prototypes(support, support_labels, ways)  # [N, D]
    logits = -pairwise_distances(query, prototypes, squared=True) / temperature
    loss = F.cross_entropy(logits, query_labels)
    accuracy = (logits.argmax(1) == query_labels).float().mean()
    return loss, accuracy


#: The margins `proxy_softmax_loss` knows: none, on the cosine, on the angle.
PROXY_MARGINS = ("none", "cosine", "angular")


def proxy_softmax_loss(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    margin: float = 0.0,
    kind: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``scale · cos`` logits of embeddings ``[B, D]`` against class proxies
    ``[K, D]`` (both made unit length here) for labels ``[B]``, with the target class's logit
    ``cos θ − m`` (``kind="cosine"``, CosFace) or ``cos(θ + m)`` (``"angular"``, ArcFace, θ + m
    capped at π). Returns the loss and the cosines ``[B, K]`` (without margin, for accuracy)."""
    if kind not in PROXY_MARGINS:
        raise ValueError(f"margin kind must be one of {PROXY_MARGINS}, got {kind!r}")
    cos = F.normalize(embeddings, dim=-1) @ F.normalize(proxies, dim=-1).T
    target = F.one_hot(labels, proxies.shape[0]).bool()
    logits = cos
    if kind == "cosine" and margin:
        logits = torch.where(target, cos - margin, cos)
    elif kind == "angular" and margin:
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        logits = torch.where(target, torch.cos((theta + margin).clamp(max=torch.pi)), cos)
    return F.cross_entropy(scale * logits, labels), cos.detach()
