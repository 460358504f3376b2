"""One-shot episodes as pictures: the query, the N support images, the model's choice and the
right answer."""

from __future__ import annotations

import os
from collections.abc import Sequence

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

ANSWER_COLOUR = "tab:blue"
MAX_WAYS = 10
MAX_EPISODES = 6


def plot_episodes(
    query: torch.Tensor,
    support: torch.Tensor,
    scores: torch.Tensor,
    answer: torch.Tensor,
    path: str | os.PathLike[str] | None = None,
    class_names: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> Figure:
    """One row per episode: the query ``[E, C, H, W]``, then one support image per class
    ``[E, N, C, H, W]`` titled with its class score ``[E, N]``. The model's choice (highest
    score) is framed green when it is the right answer `answer` ``[E]`` and red when not, in
    which case the right answer is framed blue. At most 6 episodes and 10 ways are drawn.
    `class_names[e][n]` labels the support images. Written atomically (PNG)."""
    if support.ndim != 5 or query.ndim != 4 or scores.shape != support.shape[:2]:
        raise ArgumentError(
            "episodes: expected query [E, C, H, W], support [E, N, C, H, W] and scores [E, N], "
            f"got {tuple(query.shape)}, {tuple(support.shape)}, {tuple(scores.shape)}"
        )
    e, n = min(len(query), MAX_EPISODES), min(support.shape[1], MAX_WAYS)
    if n < support.shape[1]:
        raise ArgumentError(
            f"episodes: at most {MAX_WAYS} ways can be drawn, got {support.shape[1]}"
        )
    cols = n + 1
    size = (max(1.3 * cols + 0.4, 6.5), 1.65 * e + 1.0)
    fig, axes = subplots(e, cols, figsize=size, squeeze=False)
    right = 0
    for row in range(e):
        chosen = int(scores[row].argmax())
        truth = int(answer[row])
        right += int(chosen == truth)
        show_image(axes[row, 0], query[row])
        axes[row, 0].set_title("query", fontsize=9, fontweight="bold")
        frame(axes[row, 0], "black", 2.0)
        for i in range(n):
            ax = axes[row, i + 1]
            show_image(ax, support[row, i])
            label = f"{short_name(class_names[row][i])}: " if class_names is not None else ""
            colour = "black"
            if i == chosen:
                colour = CORRECT_COLOUR if chosen == truth else WRONG_COLOUR
                frame(ax, colour)
            elif i == truth:
                colour = ANSWER_COLOUR
                frame(ax, colour)
            ax.set_title(f"{label}{float(scores[row, i]):.2f}", fontsize=8, color=colour)
    fig.supxlabel(
        f"{right}/{e} episodes right; titles: class and score\n"
        "green frame: model's choice, right; red: model's choice, wrong; blue: right answer",
        fontsize=8,
    )
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def short_name(name: str, limit: int = 12) -> str:
    """A class name short enough for a title over a small image: the part after the last
    ``/`` (Omniglot's ``"Greek/character03"`` -> ``"character03"``), cut to `limit`."""
    tail = str(name).rsplit("/", 1)[-1]
    return tail if len(tail) <= limit else tail[: limit - 1] + "…"
