"""Measuring a Siamese model: verification on pairs and N-way K-shot classification.

Every image is embedded once; pair and episode scores are computed from the embeddings in
batches with the model's head, so 1,000 20-way episodes take seconds on a CPU.

On top of the measures, `evaluate_checkpoint` evaluates a checkpoint on the classes it never
saw in training (`evaluation_data` picks them) and `calibrate_checkpoint` chooses and stores
its decision threshold on the examples training held out for validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from siamnet.checkpoint import Checkpoint, update_metadata
from siamnet.data.episodes import Episode, episodes_for_evaluation
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import fixed_pairs
from siamnet.data.registry import Dataset, load_dataset
from siamnet.data.splits import split_by_class, split_by_example
from siamnet.errors import ArgumentError, DataError, SiamnetError
from siamnet.models.heads import L1Head, PairHead, pairwise_distances
from siamnet.models.siamese import SiameseNet
from siamnet.progress import progress


def embedding_batch_size(image_size: tuple[int, int], device: torch.device | str) -> int:
    """Images per forward pass when embedding: 512 on a GPU; on a CPU, the largest power of two
    up to 512 with at most 2**17 (131,072) pixels per batch (128 at 28×28, 8 at 105×105).

    Larger CPU batches are no faster (they fall out of cache) and their activations cost
    memory: 512 images of 105×105 through Koch's first layer alone take 1.2 GB."""
    if torch.device(device).type != "cpu":
        return 512
    pixels = max(1, image_size[0] * image_size[1])
    return max(1, min(512, 2 ** int(math.log2(max(1, 2**17 // pixels)))))


@torch.no_grad()
def embed_images(
    model: SiameseNet,
    images: torch.Tensor,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Embeddings ``[N, D]`` (float32, on `device`) of uint8 images ``[N, C, H, W]``,
    `batch_size` at a time (default: `embedding_batch_size`)."""
    device = device or next(model.parameters()).device
    if batch_size is not None and batch_size < 1:
        raise ArgumentError(f"--batch-size {batch_size}: must be at least 1")
    batch_size = batch_size or embedding_batch_size(tuple(images.shape[-2:]), device)
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


# --- a checkpoint on a data set ---------------------------------------------------------------

#: N and K that ``siamnet evaluate`` reports by default (N capped at the evaluation classes).
DEFAULT_WAYS = (5, 10, 20)
DEFAULT_SHOTS = (1, 5)

#: What the score means, per head.
SCORE_MEANING = {
    "l1": "probability of 'same' (sigmoid of the L1 head)",
    "euclidean": "minus the Euclidean distance between embeddings",
    "cosine": "cosine similarity of embeddings",
}


@dataclass
class EvaluationData:
    """Images to evaluate (or calibrate) on, with what they are in words.

    Attributes:
        data: the examples, labels ``0..K-1`` over their own classes.
        description: which examples these are and why, for the report.
        unseen: True when none of the classes was seen in training.
        notes: remarks the user should read next to the numbers.
    """

    data: LabeledImages
    description: str
    unseen: bool
    notes: list[str]


def class_names(dataset: Dataset) -> list[str]:
    """The class names of every split of `dataset`, in order of first appearance."""
    parts = [part for part in dataset.splits.values() if part is not None]
    return list(dict.fromkeys(name for part in parts for name in part.classes))


def merge_splits(dataset: Dataset, classes: Sequence[str] | None = None) -> LabeledImages:
    """The examples of `classes` (default: all) from every split of `dataset` in one
    `LabeledImages`, labelled in the order of `classes` (default: of first appearance); groups
    are kept when every split has them. Classes are picked per split before any copy."""
    parts = [part for part in dataset.splits.values() if part is not None]
    names = list(dict.fromkeys(classes)) if classes is not None else class_names(dataset)
    known = set(class_names(dataset))
    missing = [c for c in names if c not in known]
    if missing:
        parts[0].class_ids(missing)  # raises a DataError that names them
    lookup = {name: i for i, name in enumerate(names)}
    groups = None
    if all(part.groups is not None for part in parts):
        group_of = {c: g for part in parts for c, g in zip(part.classes, part.groups, strict=True)}
        groups = [group_of[c] for c in names]
    images, labels = [], []
    for part in parts:
        local = torch.tensor([lookup.get(c, -1) for c in part.classes], dtype=torch.int64)
        mapped = local[part.labels]
        keep = mapped >= 0
        if bool(keep.all()):
            images.append(part.images)
            labels.append(mapped)
        elif bool(keep.any()):
            images.append(part.images[keep])
            labels.append(mapped[keep])
    if not images:
        raise DataError(f"{dataset.name}: no examples of classes {_names(names)}")
    return LabeledImages(
        images=torch.cat(images) if len(images) > 1 else images[0],
        labels=torch.cat(labels),
        classes=names,
        groups=groups,
        source=parts[0].source or dataset.name,
        notes=parts[0].notes,
    )


def training_classes(metadata: dict[str, Any]) -> list[str]:
    """The class names a checkpoint was trained on (rotated copies ``"c@90"`` included)."""
    return [str(c) for c in metadata.get("classes") or []]


def evaluation_data(
    dataset: Dataset, metadata: dict[str, Any], eval_classes: Sequence[str] | None = None
) -> EvaluationData:
    """The examples to evaluate a checkpoint on: `eval_classes` when given; else the data's
    classes never seen in training (all splits); else, when every class was seen, the test
    split (or, with none, the examples training held out for validation)."""
    every_class = class_names(dataset)
    trained = set(training_classes(metadata))
    if eval_classes:
        names = list(dict.fromkeys(str(c) for c in eval_classes))
        if len(names) < 2:
            raise ArgumentError(f"--eval-classes {','.join(names)}: name at least two classes")
        data = merge_splits(dataset, names)
        seen = [c for c in names if c in trained]
        notes = [f"{len(seen)} of these classes were seen in training: {_names(seen)}"]
        notes = notes if seen else []
        return EvaluationData(
            data,
            f"{len(names)} classes chosen by --eval-classes ({_names(names)})",
            not seen,
            notes,
        )
    held = [c for c in every_class if c not in trained]
    recorded = [c for c in metadata.get("unseen_classes") or [] if c in set(held)]
    notes: list[str] = []
    if len(recorded) >= 2:
        held = recorded
    elif held and metadata.get("val_protocol") == "held-out classes":
        notes.append(
            "these include the classes training held out for validation (they chose "
            "the best epoch and the threshold)"
        )
    if len(held) >= 2:
        data = merge_splits(dataset, held)
        return EvaluationData(
            data, f"{len(held)} classes never seen in training ({_names(held)})", True, notes
        )
    test = dataset.test
    if test is not None and test.num_classes >= 2:
        name = list(dataset.splits)[1]
        return EvaluationData(
            test,
            f"the '{name}' split: every class in the data was seen in training, so this "
            f"measures new examples of {test.num_classes} known classes",
            False,
            [],
        )
    val = validation_data(dataset, metadata)
    if val is not None:
        val.notes.append(
            "the data has no test split and every class was seen in training; "
            "these examples also chose the threshold, so the figures are optimistic"
        )
        return val
    return EvaluationData(
        merge_splits(dataset),
        "all examples of the data (every class was seen in "
        "training and the data has no test split)",
        False,
        ["these examples may have been trained on: the figures are optimistic"],
    )


def validation_data(dataset: Dataset, metadata: dict[str, Any]) -> EvaluationData | None:
    """The examples training held out for validation, rebuilt from the checkpoint's training
    arguments (the same split and seed as `siamnet.train.prepare_data`); None when `dataset`
    is not the data it was trained on (its training classes do not come out the same)."""
    args = metadata.get("training_args") or {}
    seed = int(args.get("seed") or 0)
    train = dataset.train
    try:
        if args.get("eval_classes") or args.get("eval_fraction"):
            train, _ = split_by_class(
                train,
                eval_classes=args.get("eval_classes"),
                eval_fraction=args.get("eval_fraction"),
                seed=seed,
            )
        val_classes_fraction = float(args.get("val_classes_fraction", 0.2) or 0.0)
        if train.num_classes >= 20 and val_classes_fraction > 0:
            train, val = split_by_class(train, eval_fraction=val_classes_fraction, seed=seed)
            how = "classes held out"
        else:
            train, val = split_by_example(train, float(args.get("val_fraction", 0.15)), seed=seed)
            how = "examples of the training classes held out"
    except SiamnetError:
        return None
    trained = set(training_classes(metadata))
    if not trained or not set(train.classes) <= trained or val.num_classes < 2:
        return None
    return EvaluationData(
        val,
        f"the validation split of training: {len(val)} {how} of '{dataset.name}' (seed {seed})",
        False,
        [],
    )


def calibration_data(dataset: Dataset, metadata: dict[str, Any]) -> EvaluationData:
    """Examples to calibrate a threshold on: the validation split training held out when
    `dataset` is the data the checkpoint was trained on, else the first split of `dataset`."""
    val = validation_data(dataset, metadata)
    if val is not None:
        return val
    first = dataset.train
    name = next(iter(dataset.splits))
    return EvaluationData(
        first,
        f"the '{name}' split of '{dataset.name}' ({len(first)} examples of "
        f"{first.num_classes} classes; not the data this checkpoint was trained on)",
        False,
        [],
    )


def default_threshold(metadata: dict[str, Any]) -> tuple[float, str] | None:
    """The fixed threshold a head has before calibration, and what it means in words:
    probability 0.5 (``l1``), cosine 0, half the margin for a contrastive-trained distance.

    None where the objective sets no scale for the distance (triplet, proto): only a calibrated
    threshold means anything there.
    """
    head = metadata["model_spec"].get("head") or ""
    if head == "l1":
        return 0.5, "probability 0.5, the fixed default of the l1 head"
    if head == "cosine":
        return 0.0, "cosine 0, the fixed default of the cosine head"
    args = metadata.get("training_args") or {}
    if (metadata["model_spec"].get("loss") or args.get("loss")) != "contrastive":
        return None
    margin = float(args.get("margin") or 1.0)
    return -margin / 2, f"distance {margin / 2:g} (half the margin {margin:g}), the fixed default"


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
    metrics = None
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
    assert metrics is not None
    return {
        "pairs": metrics.pairs,
        "positives": int((targets > 0.5).sum()),
        "roc_auc": metrics.roc_auc,
        "eer": metrics.eer,
        "thresholds": rows,
    }


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


def scorings_for(head: str, shots: int) -> list[str]:
    """``mean`` for every head; also ``prototype`` for embedding heads when K > 1 (with one
    support image the two are the same)."""
    return ["mean", "prototype"] if shots > 1 and head in ("euclidean", "cosine") else ["mean"]


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
    head = model.head.kind
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


@dataclass
class Evaluation:
    """What `evaluate_checkpoint` measured: the report and the tensors behind it (for figures).

    ``embeddings`` ``[N, D]`` of ``data.data.images``; verification pairs ``left``/``right``
    ``[P]`` (indices), ``targets`` ``[P]`` (1 = same) and ``scores`` ``[P]``.
    """

    report: dict[str, Any]
    data: EvaluationData
    embeddings: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor


def evaluate_checkpoint(
    ckpt: Checkpoint,
    dataset: Dataset,
    *,
    eval_classes: Sequence[str] | None = None,
    pairs: int = 10000,
    ways: Sequence[int] = DEFAULT_WAYS,
    shots: Sequence[int] = DEFAULT_SHOTS,
    queries: int = 1,
    episodes: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Verification on `pairs` fixed pairs and N-way K-shot accuracy of a checkpoint on the
    evaluation examples `evaluation_data` picks; ``.report`` is a JSON-ready dict."""
    check_compatible(ckpt, dataset)
    chosen = evaluation_data(dataset, ckpt.metadata, eval_classes)
    model = ckpt.model
    device = next(model.parameters()).device
    emb = embed_images(model, chosen.data.images, device=device)
    left, right, target, scores = verification_pairs(model, emb, chosen.data.labels, pairs, seed)
    calibrated = (ckpt.threshold, str(ckpt.metadata.get("threshold_source") or "checkpoint"))
    thresholds = {"default": default_threshold(ckpt.metadata), "calibrated": calibrated}
    verification = verification_report(
        scores, target, {name: t for name, t in thresholds.items() if t is not None}
    )
    rows, notes = few_shot_table(
        model,
        emb,
        chosen.data,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        seed=seed,
    )
    spec = ckpt.spec
    report = {
        "checkpoint": str(ckpt.path),
        "data": dataset.name,
        "model": {
            "backbone": spec.model,
            "head": spec.head,
            "loss": spec.loss,
            "score": SCORE_MEANING.get(spec.head, spec.head),
        },
        "evaluation_data": {
            "description": chosen.description,
            "unseen_classes": chosen.unseen,
            "classes": chosen.data.classes,
            "images": len(chosen.data),
            "notes": chosen.notes,
        },
        "seed": seed,
        "verification": verification,
        "one_shot": [r.to_dict() for r in rows],
        "one_shot_notes": notes,
    }
    return Evaluation(report, chosen, emb, left, right, target, scores)


def dataset_for(ckpt: Checkpoint, spec: str | None = None) -> Dataset:
    """Load `spec` (default: the data the checkpoint was trained on), images resized to the
    model's input size."""
    spec = spec or (ckpt.metadata.get("training_args") or {}).get("data")
    if not spec:
        raise ArgumentError(f"{ckpt.path}: records no training data; pass --data SPEC")
    dataset = load_dataset(str(spec), tuple(ckpt.spec.image_size))
    check_compatible(ckpt, dataset)
    return dataset


def check_compatible(ckpt: Checkpoint, dataset: Dataset) -> None:
    """Refuse data whose images do not fit the model's input (channels, size)."""
    spec = ckpt.spec
    data = dataset.train
    if data.channels != spec.in_channels or data.image_size != tuple(spec.image_size):
        raise ArgumentError(
            f"--data {dataset.name}: images are {data.channels}×{data.image_size[0]}×"
            f"{data.image_size[1]} but {ckpt.path} expects {spec.in_channels}×"
            f"{spec.image_size[0]}×{spec.image_size[1]}"
        )


# --- calibration --------------------------------------------------------------------------------


def calibrate_checkpoint(
    ckpt: Checkpoint,
    dataset: Dataset,
    *,
    target_far: float | None = None,
    best_accuracy: bool = False,
    pairs: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Choose a threshold on calibration pairs (`calibration_data`) for a false-accept rate of
    at most `target_far` or for the best accuracy, and write it into the checkpoint's metadata
    file atomically (``ckpt.metadata`` too). Returns old and new threshold and the FAR/FRR
    achieved on those pairs."""
    if best_accuracy == (target_far is not None):
        raise ArgumentError("give exactly one of --target-far RATE or --best-accuracy")
    if target_far is not None and not 0.0 <= target_far < 1.0:
        raise ArgumentError(f"--target-far must lie in [0, 1), got {target_far:g}")
    check_compatible(ckpt, dataset)
    chosen = calibration_data(dataset, ckpt.metadata)
    emb = embed_images(ckpt.model, chosen.data.images)
    _, _, target, scores = verification_pairs(ckpt.model, emb, chosen.data.labels, pairs, seed)
    if best_accuracy:
        threshold = best_accuracy_threshold(scores, target)
        goal = "best accuracy"
    else:
        threshold = threshold_for_far(scores, target, float(target_far))
        goal = f"false-accept rate at most {target_far:g}"
    achieved = pair_metrics(scores, target, threshold)
    old = (ckpt.threshold, str(ckpt.metadata.get("threshold_source") or ""))
    source = f"calibrated for {goal} on {len(target):,} pairs of {chosen.description}"
    calibration = {
        "goal": goal,
        "target_far": target_far,
        "pairs": len(target),
        "seed": seed,
        "data": chosen.description,
        "far": achieved.far,
        "frr": achieved.frr,
        "accuracy": achieved.accuracy,
    }
    updates = {"threshold": threshold, "threshold_source": source, "calibration": calibration}
    update_metadata(ckpt.path, updates)
    ckpt.metadata.update(updates)
    return {
        "checkpoint": str(ckpt.path),
        "old_threshold": old[0],
        "old_source": old[1],
        "threshold": threshold,
        "source": source,
        **calibration,
    }


def _names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


# --- reports as text ----------------------------------------------------------------------------


def format_evaluation(report: dict[str, Any]) -> str:
    """`evaluate_checkpoint`'s report as a readable text table."""
    m = report["model"]
    ev = report["evaluation_data"]
    ver = report["verification"]
    lines = [
        f"checkpoint: {report['checkpoint']} ({m['backbone']} backbone, {m['head']} head, "
        f"{m['loss']} loss)",
        f"data: {report['data']}; evaluated on {ev['description']}, {ev['images']:,} images",
        *(f"note: {n}" for n in ev["notes"]),
        "",
        f"verification: {ver['pairs']:,} fixed pairs ({ver['positives']:,} same, "
        f"{ver['pairs'] - ver['positives']:,} different; seed {report['seed']})",
        f"score: {m['score']}; 'same' when score >= threshold",
        f"ROC AUC {_fmt(ver['roc_auc'])}   equal error rate {_fmt(ver['eer'])}",
        "",
    ]
    header = ["threshold", "value", "accuracy", "precision", "recall", "FAR", "FRR"]
    rows = [
        [
            r["name"],
            f"{r['threshold']:.4f}",
            *(_fmt(r[k]) for k in ("accuracy", "precision", "recall", "far", "frr")),
        ]
        for r in ver["thresholds"]
    ]
    lines += _text_table(header, rows)
    lines += [f"  {r['name']}: {r['source']}" for r in ver["thresholds"]]
    shots = report["one_shot"]
    if shots:
        first = shots[0]
        lines += [
            "",
            f"N-way K-shot accuracy: {first['episodes']:,} episodes per row, "
            f"{first['queries']} quer{'y' if first['queries'] == 1 else 'ies'} per class, "
            "± 95% confidence interval",
        ]
        header = ["protocol", "ways", "shots", "scoring", "accuracy", "± 95% CI", "chance"]
        rows = [
            [
                r["protocol"],
                str(r["ways"]),
                str(r["shots"]),
                r["scoring"],
                _fmt(r["accuracy"]),
                _fmt(r["ci95"]),
                _fmt(1.0 / r["ways"]),
            ]
            for r in shots
        ]
        lines += _text_table(header, rows)
        lines += [
            "  scoring: mean = the mean score against a class's K support images;",
            "           prototype = the score against their mean embedding",
        ]
    lines += [f"note: {n}" for n in report["one_shot_notes"]]
    return "\n".join(lines)


def format_calibration(result: dict[str, Any]) -> str:
    """`calibrate_checkpoint`'s result in a few lines."""
    return "\n".join(
        [
            f"calibrated {result['checkpoint']} for {result['goal']} on {result['pairs']:,} pairs "
            f"of {result['data']}",
            f"old threshold: {result['old_threshold']:.4f} ({result['old_source']})",
            f"new threshold: {result['threshold']:.4f}",
            f"on these pairs: false-accept rate {result['far']:.4f}, false-reject rate "
            f"{result['frr']:.4f}, accuracy {result['accuracy']:.4f}",
        ]
    )


def json_ready(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so that it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                c.ljust(w) if i in (0,) or not _numeric(c) else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )

    return [line(header), "  " + "  ".join("-" * w for w in widths), *map(line, rows)]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "n/a"
    return True
