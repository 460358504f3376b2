"""N-way K-shot accuracy over seeded episodes, scored from embeddings in batches by the head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from siamnet.data.episodes import Episode, episodes_for_evaluation
from siamnet.data.labeled import LabeledImages
from siamnet.errors import ArgumentError
from siamnet.models.heads import PairHead
from siamnet.models.prototypes import class_scores
from siamnet.models.siamese import SiameseNet


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


@torch.no_grad()
def episode_predictions(
    model: SiameseNet, embeddings: torch.Tensor, episodes: Episode, ways: int, scoring: str = "mean"
) -> torch.Tensor:
    """Predicted episode-local class ``[E, N·Q]`` of each query.

    ``scoring="mean"``: a class's score is the mean similarity to its K support images.
    ``scoring="prototype"``: the similarity to the mean support embedding (Snell et al. 2017).
    Both as `siamnet.models.prototypes.class_scores`, which inference uses too.
    """
    q = embeddings[episodes.query]  # [E, NQ, D]
    s = embeddings[episodes.support]  # [E, NK, D]
    scores = class_scores(model.head, q, s, episodes.support_labels, ways, scoring)  # [E, NQ, N]
    return scores.argmax(-1)


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
    ep = episodes_for_evaluation(labels.cpu(), ways, shots, queries, episodes, seed, groups=groups)
    dev = embeddings.device
    ep = ep.to(dev)
    predicted = episode_predictions(model, embeddings, ep, ways, scoring)
    per_episode = (predicted == ep.query_labels).double().mean(1)
    acc = float(per_episode.mean())
    n = len(per_episode)
    ci = 1.96 * float(per_episode.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
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


#: N and K that ``siamnet evaluate`` reports by default (N capped at the evaluation classes).
DEFAULT_WAYS = (5, 10, 20)


DEFAULT_SHOTS = (1, 5)


def capped_ways(
    labels: torch.Tensor, ways: Sequence[int], need: int, groups: torch.Tensor | None = None
) -> list[int]:
    """`ways` capped at the classes with at least `need` examples (at the largest group's
    such classes with `groups`), duplicates removed in order; values below 2 dropped."""
    counts = torch.bincount(labels.cpu())
    usable = counts >= need
    if groups is None:
        most = int(usable.sum())
    else:
        g = groups.cpu()[: len(counts)][usable]
        most = int(torch.bincount(g).max()) if g.numel() else 0
    capped = [min(int(n), most) for n in ways]
    return [n for n in dict.fromkeys(capped) if n >= 2]


def scorings_for(head: PairHead, shots: int) -> list[str]:
    """``mean`` for every head; also ``prototype`` for heads without weights (embedding
    heads) when K > 1 (with one support image the two are the same)."""
    return ["mean", "prototype"] if shots > 1 and not head.has_weights else ["mean"]


def group_ids(data: LabeledImages) -> torch.Tensor | None:
    """int64 ``[K]``: a group id per class (None when the classes have no groups)."""
    if data.groups is None:
        return None
    lookup = {name: i for i, name in enumerate(dict.fromkeys(data.groups))}
    return torch.tensor([lookup[g] for g in data.groups], dtype=torch.int64)


def few_shot_table(
    model: SiameseNet,
    embeddings: torch.Tensor,
    data: LabeledImages,
    *,
    ways: Sequence[int] = DEFAULT_WAYS,
    shots: Sequence[int] = DEFAULT_SHOTS,
    queries: int = 1,
    episodes: int = 1000,
    seed: int = 0,
) -> tuple[list[FewShotResult], list[str]]:
    """N-way K-shot accuracy for every N in `ways` (capped) and K in `shots`, for both
    protocols when the classes have groups, and both scorings where they differ. Returns the
    rows and notes on what was capped or left out."""
    for name, values in (("--ways", ways), ("--shots", shots)):
        if not values or any(int(v) < 1 for v in values):
            raise ArgumentError(f"{name}: expected positive integers, got {list(values)}")
    if queries < 1 or episodes < 1:
        raise ArgumentError("--queries and --episodes must be at least 1")
    head = model.head
    gids = group_ids(data)
    protocols: list[tuple[str, torch.Tensor | None]] = [("unstructured", None)]
    if gids is not None:
        protocols.append(("within-group", gids))
    labels = data.labels.to(embeddings.device)
    rows: list[FewShotResult] = []
    notes: list[str] = []
    for protocol, groups in protocols:
        for k in dict.fromkeys(int(s) for s in shots):
            capped = capped_ways(data.labels, ways, k + queries, groups)
            if not capped:
                notes.append(
                    f"{protocol} {k}-shot: fewer than 2 classes have {k + queries} "
                    "examples; left out"
                )
                continue
            asked = sorted({int(n) for n in ways} - set(capped))
            if asked:
                notes.append(
                    f"{protocol} {k}-shot: N capped at {max(capped)} (asked "
                    f"{', '.join(map(str, asked))})"
                )
            for n in capped:
                for scoring in scorings_for(head, k):
                    result = few_shot_accuracy(
                        model,
                        embeddings,
                        labels,
                        ways=n,
                        shots=k,
                        queries=queries,
                        episodes=episodes,
                        seed=seed,
                        groups=groups,
                        scoring=scoring,
                    )
                    rows.append(result)
    return rows, notes
