"""Using a trained model: compare two images, classify queries against a K-shot support set.

Every image is embedded once; scores of all (query, support) pairs come from the embeddings in
batched head operations, so 1,000 queries against a 1,000-class support set embed 2,000 images
and never loop over pairs in Python.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from siamnet.checkpoint import Checkpoint
from siamnet.errors import ArgumentError, CheckpointError, DataError
from siamnet.models.embed import embed_images
from siamnet.models.prototypes import (
    check_labels,
    check_scoring,
    class_counts,
    class_prototypes,
)
from siamnet.models.prototypes import class_scores as support_class_scores
from siamnet.models.siamese import SiameseNet

#: Elements of one ``[queries, support]`` score block; queries are processed in chunks under it.
SCORE_BLOCK = 1 << 24


# --- thresholds ------------------------------------------------------------------------------


def finite_number(value: float | None, name: str) -> float | None:
    """`value` as a float (None stays None); `ArgumentError` naming `name` (a flag such as
    ``--threshold``, or a parameter) when it is not a finite number: with ``nan`` every
    comparison is false, so every pair would be "different" and no query "unknown"."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ArgumentError(f"{name} {value}: expected a finite number")
    return number


# --- compare ---------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """The similarity of two images and the verdict at `threshold` (``same = score >= t``).

    `distance` is the embedding distance for distance heads (Euclidean for ``euclidean``,
    ``1 - cos`` for ``cosine``) and None for the ``l1`` head, whose score is a probability.
    """

    score: float
    same: bool
    threshold: float
    distance: float | None = None

    def to_dict(self) -> dict[str, float | bool | None]:
        return asdict(self)


def model_of(source: Checkpoint | SiameseNet) -> SiameseNet:
    """The network of a checkpoint, or the network itself."""
    return source.model if isinstance(source, Checkpoint) else source


def threshold_of(source: Checkpoint | SiameseNet, threshold: float | None = None) -> float:
    """`threshold` if given, else the checkpoint's calibrated threshold."""
    if threshold is not None:
        return finite_number(threshold, "threshold")  # type: ignore[return-value]
    if isinstance(source, Checkpoint):
        value = source.metadata.get("threshold")
        if value is not None:
            return float(value)
        raise CheckpointError(
            f"{source.path}: no calibrated threshold in this checkpoint; pass --threshold"
        )
    raise ArgumentError("a bare model has no calibrated threshold; pass threshold=")


@torch.no_grad()
def pair_similarity(model: SiameseNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """User-facing similarity ``[B]`` of image pairs ``[B, C, H, W]`` (0..255), on CPU."""
    device = next(model.parameters()).device
    ea = embed_images(model, a, device=device)
    eb = embed_images(model, b, device=device)
    return model.head.to_score(model.head(ea, eb)).float().cpu()


@torch.no_grad()
def compare(
    source: Checkpoint | SiameseNet,
    a: torch.Tensor,
    b: torch.Tensor,
    threshold: float | None = None,
) -> CompareResult:
    """Compare two images ``[C, H, W]`` (or ``[1, C, H, W]``), raw pixel values 0..255.

    `threshold` overrides the checkpoint's calibrated one (required for a bare model).
    """
    model = model_of(source)
    t = threshold_of(source, threshold)
    a, b = _one_image(a, "a"), _one_image(b, "b")
    device = next(model.parameters()).device
    e = embed_images(model, torch.cat([a, b]), device=device)
    raw = model.head(e[:1], e[1:])
    score = float(model.head.to_score(raw)[0])
    distance = model.head.distance(score)
    return CompareResult(score=score, same=score >= t, threshold=t, distance=distance)


def _one_image(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ArgumentError(f"image {name}: expected shape [C, H, W], got {list(x.shape)}")
    return x


# --- support sets and classification ---------------------------------------------------------


@dataclass
class SupportSet:
    """K-shot support images, embedded once.

    Attributes:
        embeddings: float ``[S, D]`` on the model's device.
        labels: int64 ``[S]`` in ``0..K-1`` (same device).
        classes: the K class names.
        paths: the file of each support image, when it came from files.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[Path] | None = None

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 2:
            raise DataError(
                f"support set: embeddings {list(self.embeddings.shape)} and labels "
                f"{list(self.labels.shape)} do not match ([S, D] and [S])"
            )
        check_labels(self.embeddings, self.labels, self.num_classes)
        if len(self.embeddings) == 0:
            raise DataError("support set: no images")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> torch.Tensor:
        """Support images per class, float ``[K]`` (zero for a class with none)."""
        return class_counts(self.labels, self.num_classes, self.embeddings.dtype)

    def prototypes(self) -> torch.Tensor:
        """Mean embedding of each class ``[K, D]`` (Snell et al. 2017)."""
        return class_prototypes(self.embeddings, self.labels, self.num_classes)


def build_support(
    source: Checkpoint | SiameseNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    paths: list[Path] | None = None,
    batch_size: int | None = None,
) -> SupportSet:
    """Embed support images uint8 ``[S, C, H, W]`` with labels ``[S]`` once."""
    model = model_of(source)
    device = next(model.parameters()).device
    embeddings = embed_images(model, images, batch_size=batch_size, device=device)
    return SupportSet(embeddings, labels.to(device=device, dtype=torch.int64), list(classes), paths)


@dataclass
class Prediction:
    """One query's answer.

    `label` is the predicted class, or None when `unknown` (its best score fell below the
    rejection threshold); `best` is the best-scoring class either way.
    """

    label: str | None
    score: float
    best: str
    runner_up: str | None
    runner_up_score: float | None
    unknown: bool

    def to_dict(self) -> dict[str, str | float | bool | None]:
        return asdict(self)


@torch.no_grad()
def class_scores(
    model: SiameseNet, support: SupportSet, queries: torch.Tensor, scoring: str = "mean"
) -> torch.Tensor:
    """Similarity of each query embedding ``[Q, D]`` to each support class: ``[Q, K]``.

    ``scoring="mean"``: the mean similarity to the class's K support images (as in Koch et al.
    2015 for K > 1). ``scoring="prototype"``: the similarity to the class's mean embedding
    (Snell et al. 2017), meant for embedding heads (``euclidean``, ``cosine``). Scored by
    `siamnet.models.prototypes.class_scores`, as few-shot evaluation is, with queries in chunks
    so that each ``[q, S]`` block stays under `SCORE_BLOCK` elements.
    """
    check_scoring(scoring)
    s = support.embeddings
    q = queries.to(s.device, s.dtype)
    rows = max(1, SCORE_BLOCK // max(1, len(s)))
    blocks = [
        support_class_scores(
            model.head, q[i : i + rows], s, support.labels, support.num_classes, scoring
        )
        for i in range(0, len(q), rows)
    ]
    return torch.cat(blocks) if blocks else q.new_zeros(0, support.num_classes)


@torch.no_grad()
def classify(
    source: Checkpoint | SiameseNet,
    support: SupportSet,
    queries: torch.Tensor,
    reject_below: float | None = None,
    scoring: str = "mean",
    batch_size: int | None = None,
) -> list[Prediction]:
    """Predict the support class of each query.

    `queries` are images ``[Q, C, H, W]`` (0..255; embedded once, in batches) or embeddings
    ``[Q, D]``. With `reject_below`, a query whose best class scores below it is "unknown"
    (open-set use, as in face or signature verification).
    """
    model = model_of(source)
    check_scoring(scoring)
    reject_below = finite_number(reject_below, "reject_below")
    if len(queries) == 0:
        return []
    if queries.dim() == 4:
        queries = embed_images(
            model, queries, batch_size=batch_size, device=support.embeddings.device
        )
    elif queries.dim() != 2:
        raise ArgumentError(
            f"queries: expected images [Q, C, H, W] or embeddings [Q, D], got {list(queries.shape)}"
        )
    scores = class_scores(model, support, queries, scoring)
    k = min(2, support.num_classes)
    top_scores, top_ids = (t.cpu().tolist() for t in scores.topk(k, dim=1))
    names = support.classes
    out = []
    for s, ids in zip(top_scores, top_ids, strict=True):
        unknown = reject_below is not None and s[0] < reject_below
        second = k > 1 and s[1] != float("-inf")
        out.append(
            Prediction(
                label=None if unknown else names[ids[0]],
                score=s[0],
                best=names[ids[0]],
                runner_up=names[ids[1]] if second else None,
                runner_up_score=s[1] if second else None,
                unknown=unknown,
            )
        )
    return out
