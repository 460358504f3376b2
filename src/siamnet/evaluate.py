"""Measuring a Siamese model: verification on pairs and N-way K-shot classification.

Every image is embedded once; pair and episode scores are computed from the embeddings in
batches with the model's head, so 1,000 20-way episodes take seconds on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn import metrics as skm

from siamnet.data.episodes import Episode, episodes_for_evaluation
from siamnet.errors import DataError
from siamnet.models.heads import L1Head, PairHead, pairwise_distances
from siamnet.models.siamese import SiameseNet
from siamnet.progress import progress


@torch.no_grad()
def embed_images(
    model: SiameseNet, images: torch.Tensor, batch_size: int = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Embeddings ``[N, D]`` (float32, on `device`) of uint8 images ``[N, C, H, W]``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = [
        model.embed(images[i : i + batch_size].to(device, non_blocking=True)).float()
        for i in progress(range(0, len(images), batch_size), desc="embedding", unit="batch")
    ]
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, 0, device=device)


@torch.no_grad()
def pair_scores(
    model: SiameseNet, embeddings: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> torch.Tensor:
    """User-facing similarity ``[P]`` of pairs given by index ``[P]`` into `embeddings`."""
    return model.head.to_score(model.head(embeddings[left], embeddings[right]))


# --- verification ---------------------------------------------------------------------------


@dataclass
class PairMetrics:
    """Verification metrics of scores against same/different targets at a threshold."""

    threshold: float
    accuracy: float
    roc_auc: float
    eer: float
    precision: float
    recall: float
    far: float
    frr: float
    pairs: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def pair_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float) -> PairMetrics:
    """Accuracy, ROC AUC, equal error rate, precision, recall, false-accept and false-reject
    rates of `scores` ``[P]`` (higher = same) against `targets` ``[P]`` in {0, 1}."""
    s = scores.detach().cpu().double().numpy()
    y = targets.detach().cpu().numpy().astype(bool)
    predicted = s >= threshold
    positives, negatives = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return PairMetrics(
        threshold=float(threshold),
        accuracy=float((predicted == y).mean()),
        roc_auc=float(skm.roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan"),
        eer=equal_error_rate(scores, targets),
        precision=float(skm.precision_score(y, predicted, zero_division=0)),
        recall=float(skm.recall_score(y, predicted, zero_division=0)),
        far=float((predicted & ~y).sum() / negatives),
        frr=float((~predicted & y).sum() / positives),
        pairs=len(y),
    )


def equal_error_rate(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The rate where false accepts equal false rejects, from sklearn's ROC curve."""
    y = targets.detach().cpu().numpy().astype(bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(y, scores.detach().cpu().double().numpy())
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0)


def best_accuracy_threshold(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The threshold that maximises accuracy on these pairs (midpoint between scores)."""
    s, order = torch.sort(scores.detach().cpu().double())
    y = targets.detach().cpu().double()[order]
    # predicting "same" for s >= s[i]: correct = negatives below i + positives from i on
    neg_below = torch.cat([torch.zeros(1, dtype=y.dtype), torch.cumsum(1 - y, 0)])
    pos_from = torch.cat([torch.flip(torch.cumsum(torch.flip(y, [0]), 0), [0]), torch.zeros(1)])
    correct = neg_below + pos_from
    # only cut between distinct values
    cuts = torch.cat([torch.tensor([True]), s[1:] != s[:-1], torch.tensor([True])])
    correct[~cuts] = -1
    i = int(torch.argmax(correct))
    if i == 0:
        return float(s[0]) - 1e-6
    if i == len(s):
        return float(s[-1]) + 1e-6
    return float((s[i - 1] + s[i]) / 2)


def threshold_for_far(scores: torch.Tensor, targets: torch.Tensor, target_far: float) -> float:
    """The lowest threshold whose false-accept rate on these pairs is at most `target_far`."""
    neg = torch.sort(scores[targets < 0.5].detach().cpu().double(), descending=True).values
    if len(neg) == 0:
        raise DataError("no negative pairs to calibrate a false-accept rate on")
    allowed = int(math.floor(target_far * len(neg)))  # negatives that may score >= threshold
    if allowed >= len(neg):
        return float(neg[-1])
    return float(neg[allowed]) + 1e-6 if allowed == 0 else float((neg[allowed - 1] + neg[allowed]) / 2)


# --- N-way K-shot ----------------------------------------------------------------------------


@dataclass
class FewShotResult:
    """Accuracy over episodes with its 95% confidence interval (normal approximation)."""

    ways: int
    shots: int
    queries: int
    episodes: int
    accuracy: float
    ci95: float
    scoring: str
    protocol: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def batched_pairwise(head: PairHead, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Raw head scores of every query against every support image, per episode:
    ``[E, Q, D], [E, S, D]`` -> ``[E, Q, S]``."""
    if isinstance(head, L1Head):
        w = head.fc.weight.squeeze(0)
        per = max(1, (1 << 24) // max(1, q.shape[1] * s.shape[1] * q.shape[2]))
        out = [
            (torch.abs(q[i : i + per, :, None, :] - s[i : i + per, None, :, :]) * w).sum(-1)
            for i in range(0, q.shape[0], per)
        ]
        return torch.cat(out) + head.fc.bias
    if head.kind == "euclidean":
        return -torch.cdist(q, s)
    if head.kind == "cosine":
        qn = torch.nn.functional.normalize(q, dim=-1)
        sn = torch.nn.functional.normalize(s, dim=-1)
        return qn @ sn.transpose(1, 2)
    return torch.stack([head.pairwise(qi, si) for qi, si in zip(q, s, strict=True)])


@torch.no_grad()
def episode_predictions(
    model: SiameseNet, embeddings: torch.Tensor, episodes: Episode, ways: int, scoring: str = "mean"
) -> torch.Tensor:
    """Predicted episode-local class ``[E, N·Q]`` of each query.

    ``scoring="mean"``: a class's score is the mean similarity to its K support images.
    ``scoring="prototype"``: the similarity to the mean support embedding (Snell et al. 2017).
    """
    e = embeddings
    q = e[episodes.query]  # [E, NQ, D]
    s = e[episodes.support]  # [E, NK, D]
    labels = episodes.support_labels  # [E, NK]
    onehot = torch.nn.functional.one_hot(labels, ways).to(e.dtype)  # [E, NK, N]
    counts = onehot.sum(1, keepdim=True)  # [E, 1, N]
    if scoring == "prototype":
        protos = (onehot.transpose(1, 2) @ s) / counts.transpose(1, 2)  # [E, N, D]
        if isinstance(model.head, L1Head) or model.head.kind != "euclidean":
            class_scores = batched_pairwise(model.head, q, protos)
        else:  # squared distance, as in prototypical networks (same ranking)
            class_scores = -torch.stack(
                [pairwise_distances(qi, pi, squared=True) for qi, pi in zip(q, protos, strict=True)]
            )
    elif scoring == "mean":
        raw = batched_pairwise(model.head, q, s)  # [E, NQ, NK]
        class_scores = (model.head.to_score(raw) @ onehot) / counts
    else:
        raise ValueError(f"scoring must be 'mean' or 'prototype', got {scoring!r}")
    return class_scores.argmax(-1)


def few_shot_accuracy(
    model: SiameseNet,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    ways: int,
    shots: int = 1,
    queries: int = 1,
    episodes: int = 1000,
    seed: int = 0,
    groups: torch.Tensor | None = None,
    scoring: str = "mean",
) -> FewShotResult:
    """N-way K-shot accuracy over seeded episodes from `embeddings` ``[N, D]`` / `labels` ``[N]``.

    `groups` (int64, one group id per class) restricts every episode to one group
    (the *within-group* protocol of Koch et al. and Lake et al.); without it the N classes come
    from all classes (*unstructured*, as in Matching and Prototypical Networks).
    """
    ep = episodes_for_evaluation(
        labels.cpu(), ways, shots, queries, episodes, seed, groups=groups
    )
    dev = embeddings.device
    ep = Episode(*(t.to(dev) for t in (ep.support, ep.support_labels, ep.query, ep.query_labels, ep.classes)))
    predicted = episode_predictions(model, embeddings, ep, ways, scoring)
    per_episode = (predicted == ep.query_labels).double().mean(1)
    acc = float(per_episode.mean())
    ci = 1.96 * float(per_episode.std(unbiased=True)) / math.sqrt(len(per_episode)) if len(per_episode) > 1 else float("nan")
    return FewShotResult(
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=len(per_episode),
        accuracy=acc,
        ci95=ci,
        scoring=scoring,
        protocol="within-group" if groups is not None else "unstructured",
    )
