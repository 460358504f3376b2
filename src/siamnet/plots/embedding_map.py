"""A 2-D map of embeddings (t-SNE, or UMAP when installed), coloured by class, with training
classes and classes never seen in training drawn with different markers."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps

from siamnet.errors import ArgumentError
from siamnet.plots._common import Figure, save_figure, subplots

MAX_POINTS = 2000
MAX_CLASSES = 20
SEEN_MARKER, UNSEEN_MARKER = "o", "x"


def umap_available() -> bool:
    """Whether the optional ``umap`` package (umap-learn) is installed."""
    return importlib.util.find_spec("umap") is not None


def project_2d(
    embeddings: torch.Tensor, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, str]:
    """Embeddings ``[N, D]`` -> 2-D coordinates ``[N, 2]`` and the method used: ``tsne``,
    ``umap``, or ``auto`` (UMAP when the package is installed, else t-SNE)."""
    x = embeddings.detach().cpu().double().numpy()
    if method == "auto":
        method = "umap" if umap_available() else "tsne"
    if method == "umap":
        if not umap_available():
            raise ArgumentError(
                "--method umap: the umap package is not installed "
                "(pip install umap-learn), use --method tsne"
            )
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "UMAP"
    if method != "tsne":
        raise ArgumentError(f"--method {method!r}: expected auto, tsne or umap")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # 500 iterations (250 of them early exaggeration) settle the map of 2,000 points and
    # take half the time of the default 1,000.
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
    return tsne.fit_transform(x), "t-SNE"


def choose_classes(
    seen: Sequence[bool], max_classes: int = MAX_CLASSES, seed: int = 0
) -> list[int]:
    """At most `max_classes` class ids (indices into `seen`), half seen in training and half
    unseen where both exist, drawn at random under `seed`, in increasing order per side."""
    g = torch.Generator().manual_seed(seed)
    seen_ids = [c for c, flag in enumerate(seen) if flag]
    unseen_ids = [c for c, flag in enumerate(seen) if not flag]
    take_seen = min(len(seen_ids), max(max_classes // 2, max_classes - len(unseen_ids)))
    take_unseen = min(len(unseen_ids), max_classes - take_seen)
    return [
        ids[i]
        for ids, k in ((seen_ids, take_seen), (unseen_ids, take_unseen))
        for i in sorted(torch.randperm(len(ids), generator=g)[:k].tolist())
    ]


def choose_points(
    labels: torch.Tensor,
    seen: Sequence[bool],
    max_points: int = MAX_POINTS,
    max_classes: int = MAX_CLASSES,
    seed: int = 0,
) -> torch.Tensor:
    """Indices ``[M]`` of at most `max_points` examples of at most `max_classes` classes
    (`choose_classes` among the classes present), drawn at random under `seed`. `labels`
    ``[N]`` index `seen` (one flag per class)."""
    labels = labels.cpu()
    present = set(torch.unique(labels).tolist())
    flags = [bool(flag) if c in present else None for c, flag in enumerate(seen)]
    pool = [c for c, flag in enumerate(flags) if flag is not None]
    picked = choose_classes([bool(flags[c]) for c in pool], max_classes, seed)
    chosen = torch.tensor([pool[i] for i in picked], dtype=labels.dtype)
    index = torch.nonzero(torch.isin(labels, chosen)).flatten()
    g = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(index), generator=g)[:max_points]
    return index[order.sort().values]


def plot_embedding_map(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    seen: Sequence[bool],
    path: str | os.PathLike[str] | None = None,
    method: str = "auto",
    max_points: int = MAX_POINTS,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """Map embeddings ``[N, D]`` with `labels` ``[N]`` to 2-D and draw them coloured by class:
    circles for classes in training (`seen[c]` True), crosses for classes never seen. At most
    `max_points` points of at most 20 classes are drawn. Written atomically (PNG)."""
    if len(embeddings) != len(labels):
        raise ArgumentError("embedding map: one label per embedding is needed")
    index = choose_points(labels, seen, max_points, seed=seed)
    if len(index) < 5:
        raise ArgumentError(f"embedding map: {len(index)} points are too few to map")
    xy, used = project_2d(embeddings[index], method, seed)
    lab = labels.cpu()[index].numpy()
    classes = list(dict.fromkeys(int(c) for c in np.unique(lab)))
    classes.sort(key=lambda c: (not seen[c], c))
    cmap = colormaps.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = subplots(1, 1, figsize=(9.5, 7))
    for i, c in enumerate(classes):
        at = lab == c
        marker = SEEN_MARKER if seen[c] else UNSEEN_MARKER
        style = (
            {"facecolors": "none", "edgecolors": cmap(i % cmap.N)}
            if seen[c]
            else {"c": [cmap(i % cmap.N)]}
        )
        tag = "" if seen[c] else " (unseen)"
        ax.scatter(
            xy[at, 0],
            xy[at, 1],
            s=22,
            marker=marker,
            linewidths=1.1,
            label=f"{class_names[c]}{tag}",
            **style,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{used} 1")
    ax.set_ylabel(f"{used} 2")
    n_seen = sum(1 for c in classes if seen[c])
    ax.set_title(
        title
        or f"{used} map of {len(index):,} embeddings: {n_seen} training classes "
        f"(○), {len(classes) - n_seen} unseen classes (×)"
    )
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title="class",
        markerscale=1.4,
        frameon=False,
    )
    return save_figure(fig, path)
