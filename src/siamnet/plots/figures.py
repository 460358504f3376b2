"""Figures of a trained model on data: picks the images, computes the scores and calls the
drawing modules (`pairs`, `roc`, `embedding_map`, `episodes`). Used by ``siamnet plot`` and
``siamnet evaluate --figures``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from siamnet.checkpoint import Checkpoint
from siamnet.data.dataset import Dataset
from siamnet.data.episodes import episodes_for_evaluation
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import fixed_pairs
from siamnet.errors import ArgumentError
from siamnet.evaluate import (
    Evaluation,
    class_names,
    merge_splits,
    training_classes,
    verification_pairs,
)
from siamnet.models.embed import embed_images
from siamnet.plots._common import Figure
from siamnet.plots.embedding_map import (
    MAX_POINTS,
    choose_classes,
    choose_points,
    plot_embedding_map,
)
from siamnet.plots.episodes import MAX_WAYS, plot_episodes
from siamnet.plots.pairs import plot_pairs, plot_predictions
from siamnet.plots.roc import plot_roc


def shown_pairs(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, ...]:
    """`count` balanced pairs in a seeded random order: left, right int64 ``[count]`` and
    same bool ``[count]`` (fixed pairs come negatives first; a figure mixes them)."""
    if count < 2 or count > 16:
        raise ArgumentError(f"--count must lie between 2 and 16 pairs, got {count}")
    left, right, target = fixed_pairs(labels.cpu(), count, seed)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return left[order], right[order], target[order] > 0.5


def pairs_figure(
    data: LabeledImages,
    path: str | os.PathLike[str] | None = None,
    count: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """Pairs of `data` as the blog post's first figure: left images above right images."""
    left, right, same = shown_pairs(data.labels, count, seed)
    return plot_pairs(data.images[left], data.images[right], same, path, title=title)


def predictions_figure(
    ckpt: Checkpoint,
    data: LabeledImages,
    path: str | os.PathLike[str] | None = None,
    count: int = 10,
    seed: int = 0,
    threshold: float | None = None,
) -> Figure:
    """The model's verdict on pairs of `data` at `threshold` (default: the checkpoint's)."""
    t = ckpt.threshold if threshold is None else float(threshold)
    left, right, same = shown_pairs(data.labels, count, seed)
    model = ckpt.model
    device = next(model.parameters()).device
    with torch.no_grad():
        scores = model.score(data.images[left].to(device), data.images[right].to(device)).cpu()
    title = f"{ckpt.spec.model} / {ckpt.spec.head}: predictions at threshold {t:.3g}"
    return plot_predictions(
        data.images[left], data.images[right], same, scores, scores >= t, path, title=title
    )


def roc_figure(
    ckpt: Checkpoint,
    data: LabeledImages,
    path: str | os.PathLike[str] | None = None,
    pairs: int = 10000,
    seed: int = 0,
    evaluation: Evaluation | None = None,
) -> Figure:
    """ROC curve and score histograms of `pairs` fixed pairs of `data` (or of `evaluation`'s
    verification pairs) at the checkpoint's threshold."""
    if evaluation is not None:
        scores, targets = evaluation.scores, evaluation.targets
    else:
        emb = embed_images(ckpt.model, data.images)
        _, _, targets, scores = verification_pairs(ckpt.model, emb, data.labels, pairs, seed)
    head = ckpt.spec.head
    return plot_roc(
        scores,
        targets,
        ckpt.threshold,
        path,
        score_name=ckpt.model.head.axis_label,
        title=f"{ckpt.spec.model} / {head} on {len(targets):,} pairs",
    )


def embeddings_figure(
    ckpt: Checkpoint,
    dataset: Dataset,
    path: str | os.PathLike[str] | None = None,
    max_points: int = MAX_POINTS,
    method: str = "auto",
    seed: int = 0,
) -> Figure:
    """A 2-D map of the embeddings of every split of `dataset`, training classes as circles
    and unseen classes as crosses (at most `max_points` points of 20 classes)."""
    if max_points < 5:
        raise ArgumentError(f"--points must be at least 5, got {max_points}")
    trained = set(training_classes(ckpt.metadata))
    names = class_names(dataset)
    picked = [names[c] for c in choose_classes([n in trained for n in names], seed=seed)]
    data = merge_splits(dataset, picked)  # copies the images of these classes only
    seen = [c in trained for c in data.classes]
    index = choose_points(data.labels, seen, max_points, seed=seed)
    emb = embed_images(ckpt.model, data.images[index])
    return plot_embedding_map(
        emb,
        data.labels[index],
        data.classes,
        seen,
        path,
        method=method,
        max_points=len(index),
        seed=seed,
    )


def episodes_figure(
    ckpt: Checkpoint,
    data: LabeledImages,
    path: str | os.PathLike[str] | None = None,
    ways: int = 5,
    episodes: int = 4,
    seed: int = 0,
) -> Figure:
    """`episodes` one-shot `ways`-way episodes of `data` (ways capped at its classes and at 10)
    with the model's class scores, its choice and the right answer."""
    ways = min(int(ways), data.num_classes, MAX_WAYS)
    if ways < 2:
        raise ArgumentError(f"--ways: episodes need at least 2 classes, got {ways}")
    if not 1 <= episodes <= 6:
        raise ArgumentError(f"--episodes must lie between 1 and 6 for a figure, got {episodes}")
    ep = episodes_for_evaluation(data.labels.cpu(), ways, 1, 1, episodes, seed)
    pick = torch.randint(0, ways, (episodes,), generator=torch.Generator().manual_seed(seed))
    query = ep.query.gather(1, pick[:, None]).squeeze(1)  # [E], its local label is `pick`
    model = ckpt.model
    device = next(model.parameters()).device
    used = torch.cat([query, ep.support.reshape(-1)])
    emb = embed_images(model, data.images[used], device=device)
    q, s = emb[:episodes, None, :], emb[episodes:].view(episodes, ways, -1)
    with torch.no_grad():
        scores = model.head.to_score(model.head.pairwise(q, s))[:, 0, :].cpu()
    names = [[data.classes[int(c)] for c in row] for row in ep.classes]
    return plot_episodes(
        data.images[query],
        data.images[ep.support],
        scores,
        pick,
        path,
        class_names=names,
        title=f"{ways}-way one-shot episodes ({ckpt.spec.model} / {ckpt.spec.head})",
    )


def evaluation_figures(
    ckpt: Checkpoint,
    dataset: Dataset,
    evaluation: Evaluation,
    folder: str | os.PathLike[str],
    seed: int = 0,
    max_points: int = MAX_POINTS,
) -> list[Path]:
    """Every figure of an evaluation into `folder`: pairs, predictions, roc, embeddings and
    episodes (PNG), drawn from the evaluation's own data and pairs."""
    out = Path(folder)
    data = evaluation.data.data
    ways = min(5, data.num_classes)
    names = ["pairs.png", "predictions.png", "roc.png", "embeddings.png", "episodes.png"]
    pairs_figure(data, out / names[0], seed=seed, title="pairs of the evaluation data")
    predictions_figure(ckpt, data, out / names[1], seed=seed)
    roc_figure(ckpt, data, out / names[2], evaluation=evaluation)
    embeddings_figure(ckpt, dataset, out / names[3], max_points, seed=seed)
    episodes_figure(ckpt, data, out / names[4], ways=ways, seed=seed)
    return [out / name for name in names]
