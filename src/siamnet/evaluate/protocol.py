"""A checkpoint on a data set: `evaluate_checkpoint` (verification on fixed pairs and the
N-way K-shot table on unseen classes) and `calibrate_checkpoint` (choose and store a threshold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from siamnet.checkpoint import Checkpoint, update_metadata
from siamnet.data.dataset import Dataset
from siamnet.data.in_memory import as_dataset
from siamnet.errors import ArgumentError
from siamnet.evaluate.data import (
    EvaluationData,
    calibration_data,
    check_compatible,
    evaluation_data,
)
from siamnet.evaluate.fewshot import DEFAULT_SHOTS, DEFAULT_WAYS, few_shot_table
from siamnet.evaluate.metrics import (
    best_accuracy_threshold,
    pair_metrics,
    threshold_for_far,
    verification_pairs,
    verification_report,
)
from siamnet.evaluate.pixels import pixel_embeddings, pixel_few_shot_table, pixel_model
from siamnet.evaluate.retrieval import retrieval_metrics
from siamnet.models.embed import embed_images
from siamnet.models.heads import HEADS
from siamnet.models.siamese import centring_as
from siamnet.presets import EVAL_EPISODES, EVAL_PAIRS, EVAL_SEED


def default_threshold(metadata: dict[str, Any]) -> tuple[float, str] | None:
    """The fixed threshold a model has before calibration, and what it means in words, as
    training recorded it: probability 0.5 (``l1``), cosine 0, half the margin for a
    contrastive-trained distance. None where the objective sets no scale for the distance
    (triplet, proto): only a calibrated threshold means anything there."""
    recorded = metadata.get("default_threshold")
    if recorded:
        return float(recorded[0]), str(recorded[1])
    head = HEADS.get(metadata["model_spec"].get("head") or "")
    return head.default_threshold if head is not None else None


def tuned_on_seen_classes(metadata: dict[str, Any]) -> bool:
    """Whether training tuned the checkpoint's threshold on examples of its own training
    classes (validation held out examples, not classes) and no calibration replaced it."""
    return metadata.get("val_protocol") not in (None, "held-out classes") and not metadata.get(
        "calibration"
    )


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
    dataset: Dataset | Any,
    *,
    eval_classes: Sequence[str] | None = None,
    pairs: int = EVAL_PAIRS,
    ways: Sequence[int] = DEFAULT_WAYS,
    shots: Sequence[int] = DEFAULT_SHOTS,
    queries: int = 1,
    episodes: int = EVAL_EPISODES,
    seed: int = EVAL_SEED,
    centring: str | None = None,
) -> Evaluation:
    """Verification on `pairs` fixed pairs and N-way K-shot accuracy of a checkpoint on the
    evaluation examples `evaluation_data` picks; ``.report`` is a JSON-ready dict. `dataset`
    is a `Dataset`, or anything `siamnet.as_dataset` takes (a SPEC, arrays, `LabeledImages`).
    `centring` (``on``/``off``) measures the model with or without test-time centring whatever
    the checkpoint applies (None: as it applies); ``report["model"]["centring"]`` says which.

    >>> import siamnet
    >>> model = siamnet.load_checkpoint("runs/digits")
    >>> report = siamnet.evaluate_checkpoint(model, "digits").report
    >>> [(r["ways"], r["shots"], r["accuracy"]) for r in report["one_shot"]]
    """
    with centring_as(ckpt.model, centring) as applied:
        return _evaluate(
            ckpt, dataset, eval_classes, pairs, ways, shots, queries, episodes, seed, applied
        )


def _evaluate(
    ckpt: Checkpoint,
    dataset: Dataset | Any,
    eval_classes: Sequence[str] | None,
    pairs: int,
    ways: Sequence[int],
    shots: Sequence[int],
    queries: int,
    episodes: int,
    seed: int,
    centring: str,
) -> Evaluation:
    """`evaluate_checkpoint` with the model's centring set to `centring` already."""
    dataset = as_dataset(dataset)
    check_compatible(ckpt, dataset)
    chosen = evaluation_data(dataset, ckpt.metadata, eval_classes)
    if chosen.unseen and tuned_on_seen_classes(ckpt.metadata):
        chosen.notes.append(
            "the calibrated threshold was tuned on classes seen in training (the data had too "
            "few classes to hold some out); its FAR and FRR below are what it does on these "
            "new classes: calibrate on them before using it"
        )
    model = ckpt.model
    device = next(model.parameters()).device
    emb = embed_images(model, chosen.data.images, device=device)
    left, right, target, scores = verification_pairs(model, emb, chosen.data.labels, pairs, seed)
    calibrated = (ckpt.threshold, str(ckpt.metadata.get("threshold_source") or "checkpoint"))
    own = ckpt.metadata["model_spec"].get("centring", "none")
    if (centring == "on") != (own == "on"):  # the threshold is for the other embeddings
        calibrated = None
        chosen.notes.append(
            f"centring {centring} here, {own} in the checkpoint: its calibrated threshold was "
            "tuned on the other embeddings and is left out"
        )
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
    # the same episodes and retrieval on raw pixels: what the learned embedding adds
    pixels = pixel_embeddings(chosen.data.images)  # read once, used by both
    pixel_rows, _ = pixel_few_shot_table(
        chosen.data,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        seed=seed,
        pixels=pixels,
    )
    retrieval = retrieval_metrics(model.head, emb, chosen.data.labels)
    pixel_retrieval = retrieval_metrics(pixel_model().head, pixels, chosen.data.labels)
    spec = ckpt.spec
    report = {
        "checkpoint": str(ckpt.path),
        "data": dataset.name,
        "model": {
            "backbone": spec.model,
            "head": spec.head,
            "loss": spec.loss,
            "score": model.head.meaning,
            "centring": centring,
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
        "one_shot_pixels": [r.to_dict() for r in pixel_rows],
        "retrieval": retrieval.to_dict() if retrieval else None,
        "retrieval_pixels": pixel_retrieval.to_dict() if pixel_retrieval else None,
    }
    return Evaluation(report, chosen, emb, left, right, target, scores)


def calibrate_checkpoint(
    ckpt: Checkpoint,
    dataset: Dataset | Any,
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
    dataset = as_dataset(dataset)
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
