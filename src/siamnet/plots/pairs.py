"""Grids of image pairs: the pairs themselves and the model's verdict on them.

Both figures have one column per pair, the left image on top and the right image below, as in
the blog post's first two figures.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from siamnet.errors import ArgumentError
from siamnet.plots._common import (
    CORRECT_COLOUR,
    WRONG_COLOUR,
    Figure,
    frame,
    save_figure,
    show_image,
    subplots,
)

MAX_COLUMNS = 16


def _check_pairs(left: torch.Tensor, right: torch.Tensor, same: torch.Tensor) -> int:
    """Validate ``left``/``right`` ``[B, C, H, W]`` and ``same`` ``[B]``; return B (≤ 16)."""
    if left.ndim != 4 or right.ndim != 4:
        raise ArgumentError(
            f"pairs: expected images [B, C, H, W], got {tuple(left.shape)} and {tuple(right.shape)}"
        )
    b = left.shape[0]
    if right.shape[0] != b or same.shape[0] != b:
        raise ArgumentError(
            f"pairs: left, right and same must have the same length, got "
            f"{left.shape[0]}, {right.shape[0]}, {same.shape[0]}"
        )
    if b == 0:
        raise ArgumentError("pairs: nothing to draw (0 pairs)")
    return min(b, MAX_COLUMNS)


def _pair_grid(n: int, title: str | None) -> tuple[Figure, Any]:
    """A 2×n grid of axes sized so that titles of neighbouring columns do not overlap."""
    width = max(1.25 * n, 4.0)
    height = 3.0 if title else 2.7
    fig, axes = subplots(2, n, figsize=(width, height), squeeze=False)
    if title:
        fig.suptitle(title)
    return fig, axes


def plot_pairs(
    left: torch.Tensor,
    right: torch.Tensor,
    same: torch.Tensor,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw pairs as columns: top row `left` ``[B, C, H, W]``, bottom row `right`, each column
    titled "same" or "different" from `same` ``[B]`` (bool). At most 16 columns are drawn.
    Written atomically to `path` (PNG)."""
    n = _check_pairs(left, right, same)
    fig, axes = _pair_grid(n, title)
    for i in range(n):
        show_image(axes[0, i], left[i])
        show_image(axes[1, i], right[i])
        axes[0, i].set_title("same" if bool(same[i]) else "different", fontsize=10)
    return save_figure(fig, path)


def plot_predictions(
    left: torch.Tensor,
    right: torch.Tensor,
    same: torch.Tensor,
    scores: torch.Tensor,
    predicted_same: torch.Tensor,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the model's verdict on pairs ``[B, C, H, W]``: each column is titled with the
    predicted label ("same"/"different") and its score ``[B]``; title and frame are green where
    the prediction matches `same` ``[B]`` and red where it does not. Written atomically (PNG)."""
    n = _check_pairs(left, right, same)
    if scores.shape[0] < n or predicted_same.shape[0] < n:
        raise ArgumentError("predictions: scores and predicted_same must have one value per pair")
    fig, axes = _pair_grid(n, title)
    n_right = 0
    for i in range(n):
        correct = bool(predicted_same[i]) == bool(same[i])
        n_right += int(correct)
        colour = CORRECT_COLOUR if correct else WRONG_COLOUR
        show_image(axes[0, i], left[i])
        show_image(axes[1, i], right[i])
        word = "same" if bool(predicted_same[i]) else "different"
        axes[0, i].set_title(f"{word}\n{float(scores[i]):.2f}", fontsize=10, color=colour)
        frame(axes[0, i], colour)
        frame(axes[1, i], colour)
    fig.supxlabel(
        f"{n_right}/{n} correct (green: right, red: wrong; title = prediction and score)",
        fontsize=9,
    )
    return save_figure(fig, path)
