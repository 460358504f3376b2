"""Verification figures: the ROC curve with the operating point, and score histograms."""

from __future__ import annotations

import os

import numpy as np
import torch
from sklearn import metrics as skm

from siamnet.errors import ArgumentError
from siamnet.plots._common import Axes, Figure, save_figure, subplots


def _arrays(scores: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[P]`` as float64 and targets ``[P]`` as bool, both classes present."""
    s = scores.detach().cpu().double().numpy()
    y = targets.detach().cpu().numpy() > 0.5
    if len(s) != len(y) or y.all() or not y.any():
        raise ArgumentError("a ROC curve needs scores of both same and different pairs")
    return s, y


def draw_roc(ax: Axes, scores: torch.Tensor, targets: torch.Tensor, threshold: float) -> None:
    """The ROC curve of `scores` ``[P]`` against `targets` ``[P]`` on `ax`, the operating
    point at `threshold` marked; AUC and equal error rate in the legend."""
    s, y = _arrays(scores, targets)
    fpr, tpr, _ = skm.roc_curve(y, s)
    auc = skm.roc_auc_score(y, s)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    eer = (fpr[i] + fnr[i]) / 2
    ax.plot(fpr, tpr, color="tab:blue", lw=2, label=f"ROC (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.plot([eer], [1 - eer], "s", color="tab:orange", ms=7, label=f"equal error rate {eer:.3f}")
    predicted = s >= threshold
    far = float((predicted & ~y).sum() / (~y).sum())
    tar = float((predicted & y).sum() / y.sum())
    ax.plot(
        [far],
        [tar],
        "o",
        color="tab:red",
        ms=8,
        label=f"threshold {threshold:.3g}: FAR {far:.3f}, FRR {1 - tar:.3f}",
    )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-accept rate (different pairs called same)")
    ax.set_ylabel("true-accept rate (1 − false-reject rate)")
    ax.set_title("ROC curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def draw_score_histograms(
    ax: Axes, scores: torch.Tensor, targets: torch.Tensor, threshold: float, score_name: str
) -> None:
    """Histograms of `scores` ``[P]`` of same and different pairs on `ax`, with the threshold
    as a vertical line."""
    s, y = _arrays(scores, targets)
    lo, hi = float(min(s.min(), threshold)), float(max(s.max(), threshold))
    bins = np.linspace(lo, hi + 1e-9, 41)
    ax.hist(s[~y], bins=bins, alpha=0.6, color="tab:red", label=f"different ({(~y).sum():,})")
    ax.hist(s[y], bins=bins, alpha=0.6, color="tab:green", label=f"same ({y.sum():,})")
    ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.3g}")
    ax.set_xlabel(score_name)
    ax.set_ylabel("pairs")
    ax.set_title("scores of same and different pairs")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def plot_roc(
    scores: torch.Tensor,
    targets: torch.Tensor,
    threshold: float,
    path: str | os.PathLike[str] | None = None,
    score_name: str = "score",
    title: str | None = None,
) -> Figure:
    """Two panels: the ROC curve with the operating threshold, and the score histograms of
    same and different pairs (`scores`, `targets` ``[P]``). Written atomically (PNG)."""
    fig, axes = subplots(1, 2, figsize=(11, 4.6))
    draw_roc(axes[0], scores, targets, threshold)
    draw_score_histograms(axes[1], scores, targets, threshold, score_name)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
