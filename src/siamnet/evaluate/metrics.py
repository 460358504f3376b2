"""Verification metrics of pair scores: accuracy, ROC AUC, EER, FAR/FRR, and thresholds."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from siamnet.data.pairs import fixed_pairs
from siamnet.errors import ArgumentError, DataError
from siamnet.models.siamese import SiameseNet


@torch.no_grad()
def pair_scores(
    model: SiameseNet, embeddings: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> torch.Tensor:
    """User-facing similarity ``[P]`` of pairs given by index ``[P]`` into `embeddings`."""
    return model.head.to_score(model.head(embeddings[left], embeddings[right]))


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


def pair_accuracy(scores: torch.Tensor, targets: torch.Tensor, threshold: float) -> float:
    """Share of pairs `scores` ``[P]`` (higher = same) gets right at `threshold`."""
    predicted = scores.detach().cpu().double() >= threshold
    return float((predicted == targets.detach().cpu().bool()).double().mean())


def rank_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """ROC AUC of `scores` ``[P]`` against `targets` ``[P]`` in {0, 1}, as the Mann-Whitney
    statistic: the chance that a positive pair outscores a negative one, ties counting half.

    Equal to sklearn's ``roc_auc_score``; the training loop uses it so that a training process
    never imports scikit-learn (about 100 MB of memory and a second of start-up)."""
    s = scores.detach().cpu().double()
    y = targets.detach().cpu().bool()
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).double()
    mean_rank = last - (counts.double() - 1) / 2  # 1-based rank, ties share their mean rank
    u = mean_rank[inverse][y].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def pair_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float) -> PairMetrics:
    """Accuracy, ROC AUC, equal error rate, precision, recall, false-accept and false-reject
    rates of `scores` ``[P]`` (higher = same) against `targets` ``[P]`` in {0, 1}."""
    from sklearn import metrics as skm  # imported here: training processes never need it

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
    from sklearn import metrics as skm

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
    """The lowest threshold whose false-accept rate on these pairs is at most `target_far`
    (midway between the highest negative score that must be rejected and the next higher one,
    so that tied scores never push the rate over the target)."""
    neg = torch.sort(scores[targets < 0.5].detach().cpu().double(), descending=True).values
    if len(neg) == 0:
        raise DataError("no negative pairs to calibrate a false-accept rate on")
    allowed = int(math.floor(target_far * len(neg)))  # negatives that may score >= threshold
    if allowed >= len(neg):
        return float(neg[-1])
    rejected = neg[allowed]  # this score, and every score tied with it, must fall below
    higher = neg[neg > rejected]
    if len(higher) == 0:
        return float(rejected) + 1e-6
    return float((higher[-1] + rejected) / 2)


def verification_pairs(
    model: SiameseNet, embeddings: torch.Tensor, labels: torch.Tensor, pairs: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed, balanced set of pairs and their scores: left, right int64 ``[P]`` (indices into
    `embeddings` ``[N, D]``), target float32 ``[P]`` and score ``[P]`` (on the CPU)."""
    if pairs < 2:
        raise ArgumentError(f"--pairs must be at least 2, got {pairs}")
    left, right, target = fixed_pairs(labels.cpu(), pairs, seed)
    dev = embeddings.device
    scores = pair_scores(model, embeddings, left.to(dev), right.to(dev)).cpu()
    return left, right, target, scores


def verification_report(
    scores: torch.Tensor, targets: torch.Tensor, thresholds: dict[str, tuple[float, str]]
) -> dict[str, Any]:
    """ROC AUC and EER of `scores` ``[P]`` against `targets` ``[P]``, and accuracy, precision,
    recall, FAR and FRR at each named threshold ``{name: (value, source)}``."""
    rows = []
    # the threshold-free figures, also where no threshold is known
    metrics = pair_metrics(scores, targets, 0.0)
    for name, (value, source) in thresholds.items():
        metrics = pair_metrics(scores, targets, value)
        rows.append(
            {
                "name": name,
                "threshold": value,
                "source": source,
                **{
                    k: getattr(metrics, k)
                    for k in ("accuracy", "precision", "recall", "far", "frr")
                },
            }
        )
    return {
        "pairs": metrics.pairs,
        "positives": int((targets > 0.5).sum()),
        "roc_auc": metrics.roc_auc,
        "eer": metrics.eer,
        "thresholds": rows,
    }


def json_ready(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so that it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
