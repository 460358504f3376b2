"""Validation after each epoch, and the final calibration and test of the best model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from siamnet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, update_metadata
from siamnet.data.labeled import LabeledImages
from siamnet.evaluate import (
    EVAL_EPISODES,
    EVAL_PAIRS,
    EVAL_SEED,
    best_accuracy_threshold,
    few_shot_accuracy,
    pair_accuracy,
    pair_metrics,
    rank_auc,
    verification_pairs,
)
from siamnet.fileio import atomic_write_text
from siamnet.models.embed import embed_images, embedding_batch_size
from siamnet.models.siamese import SiameseNet
from siamnet.train.config import TrainConfig, TrainingError
from siamnet.train.data import TrainData
from siamnet.train.rundir import RunState

#: Seeds of validation's fixed pairs and episodes, offset from the run's ``--seed``.
VAL_PAIRS_SEED, VAL_EPISODES_SEED = 1, 2


def fixed_pair_scores(
    model: SiameseNet, emb: torch.Tensor, labels: torch.Tensor, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[P]`` (on the CPU) and targets ``[P]`` of `count` seeded balanced pairs drawn
    from `labels` ``[N]``, scored from the embeddings ``[N, D]``."""
    _, _, target, scores = verification_pairs(model, emb, labels, count, seed)
    return scores, target


@torch.no_grad()
def validate(
    cfg: TrainConfig, model: SiameseNet, val: LabeledImages, device: torch.device
) -> dict[str, Any]:
    """Validation pair accuracy (threshold tuned on the same pairs, and at the head's
    natural threshold) and N-way one-shot accuracy on the validation data."""
    emb = embed_images(model, val.images, device=device)
    scores, target = fixed_pair_scores(
        model, emb, val.labels, cfg.val_pairs, cfg.seed + VAL_PAIRS_SEED
    )
    threshold = best_accuracy_threshold(scores, target)
    accuracy = pair_accuracy(scores, target, threshold)
    ways = min(cfg.val_ways, _classes_with(val.labels, 2))
    out = {
        "val_pair_acc": accuracy,
        "val_pair_count": len(target),
        "val_auc": rank_auc(scores, target),
        "threshold": threshold,
    }
    if ways >= 2:
        fs = few_shot_accuracy(
            model,
            emb,
            val.labels.to(device),
            ways=ways,
            shots=1,
            queries=1,
            episodes=cfg.val_episodes,
            seed=cfg.seed + VAL_EPISODES_SEED,
        )
        out.update(
            val_oneshot_acc=fs.accuracy,
            val_oneshot_ci95=fs.ci95,
            val_oneshot_ways=ways,
            selected_by="one-shot",
        )
    else:  # fewer than 2 classes with 2 examples: no episode; the best epoch is by pairs
        out.update(val_oneshot_ways=0, selected_by="pairs")
    return out


def selection_score(val: dict[str, Any]) -> float:
    """What chooses the best epoch and drives early stopping and the plateau schedule:
    validation one-shot accuracy, or pair accuracy where no episode is possible."""
    return val["val_oneshot_acc"] if val["selected_by"] == "one-shot" else val["val_pair_acc"]


def selection_ci(val: dict[str, Any]) -> float:
    """The 95% confidence half-width of `selection_score`: the episodes' own, or the normal
    approximation ``1.96 √(p(1−p)/n)`` for pair accuracy over the validation pairs."""
    if val["selected_by"] == "one-shot":
        return float(val["val_oneshot_ci95"])
    p, n = val["val_pair_acc"], max(1, int(val.get("val_pair_count", 1)))
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n)


@torch.no_grad()
def test_pair_accuracy(
    cfg: TrainConfig, model: SiameseNet, test: LabeledImages, device: torch.device, threshold: float
) -> float:
    """Accuracy on the test split's fixed pairs (those `siamnet evaluate` scores) at the
    threshold tuned on validation pairs."""
    emb = embed_images(model, test.images, device=device)
    scores, target = fixed_pair_scores(model, emb, test.labels, EVAL_PAIRS, EVAL_SEED)
    return pair_accuracy(scores, target, threshold)


def _classes_with(labels: torch.Tensor, min_count: int) -> int:
    return int((torch.bincount(labels) >= min_count).sum())


#: Images embedded per chunk when the mean training embedding is computed: the sum is kept,
#: never the embeddings, so memory stays that of one chunk whatever the training set's size.
MEAN_CHUNK_BATCHES = 16


@torch.no_grad()
def mean_embedding(model: SiameseNet, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The mean embedding ``[D]`` (float32) of uint8 images ``[N, C, H, W]``, in eval mode
    and in chunks, summed in float64."""
    chunk = embedding_batch_size(tuple(images.shape[-2:]), device) * MEAN_CHUNK_BATCHES
    total: torch.Tensor | None = None
    for i in range(0, len(images), chunk):
        part = embed_images(model, images[i : i + chunk], device=device).double().sum(0)
        total = part if total is None else total + part
    if total is None:
        raise TrainingError("no training images to compute the mean embedding from")
    return (total / len(images)).float()


def store_centring(
    cfg: TrainConfig, data: TrainData, ckpt: Checkpoint, device: torch.device
) -> str:
    """Compute the mean training embedding of the model of `ckpt` and store it in the file
    with ``--centring`` (on: applied from now on, and the threshold tuned again, on the
    validation pairs, for the centred embeddings). Returns the model's centring state; a head
    with learned weights (``l1``) is left as it is (``none``): its weights were learned on
    uncentred embeddings."""
    model, meta = ckpt.model, ckpt.metadata
    if model.head.has_weights:
        return "none"
    model.set_embedding_mean(None)  # a resumed run's best.pt may hold an earlier mean
    model.set_embedding_mean(mean_embedding(model, data.train.images, device))
    model.centring = cfg.centring == "on"
    meta["model_spec"]["centring"] = cfg.centring
    if model.centring:
        emb = embed_images(model, data.val.images, device=device)
        seed = cfg.seed + VAL_PAIRS_SEED
        scores, target = fixed_pair_scores(model, emb, data.val.labels, cfg.val_pairs, seed)
        meta["threshold"] = best_accuracy_threshold(scores, target)
        meta["threshold_source"] = "best accuracy on validation pairs, centred embeddings"
    save_checkpoint(ckpt.path, model, meta, ckpt.training)
    return cfg.centring


def finish(
    cfg: TrainConfig, data: TrainData, run_dir: Path, device: torch.device, state: RunState
) -> dict[str, Any]:
    """Store the mean training embedding in the best model (`store_centring`), then evaluate
    it on test and unseen classes with the pairs and episodes that `siamnet evaluate` draws
    (`EVAL_SEED`), so that both give the same figures."""
    best_path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    ckpt = load_checkpoint(best_path, device=device)
    centring = store_centring(cfg, data, ckpt, device)
    model = ckpt.model
    summary: dict[str, Any] = {
        "run": str(run_dir),
        "model": ckpt.spec.model,
        "loss": cfg.loss,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_by": state.stopped_by or "epochs",
        "planned_epochs": state.planned_epochs or None,
        "time_budget": cfg.time_budget or None,
        "train_seconds": round(state.seconds, 2),
        "wall_seconds": round(state.wall_seconds, 2),
        "images_seen": state.images_seen,
        "threshold": ckpt.threshold,
        "threshold_tuned_on": threshold_origin(data.val_protocol),
        "val_protocol": data.val_protocol,
        "centring": centring,
    }
    if data.test is not None and data.test.num_classes >= 2:
        emb = embed_images(model, data.test.images, device=device)
        scores, target = fixed_pair_scores(model, emb, data.test.labels, EVAL_PAIRS, EVAL_SEED)
        summary["test_pair_acc"] = pair_accuracy(scores, target, ckpt.threshold)
        summary["test_auc"] = rank_auc(scores, target)
        summary["test_classes"] = "seen in training"
        summary["test_oneshot"] = _one_shot(model, emb, data.test)
    if data.unseen is not None and data.unseen.num_classes >= 2:
        emb = embed_images(model, data.unseen.images, device=device)
        summary["oneshot"] = _one_shot(model, emb, data.unseen)
        summary["unseen_classes"] = data.unseen.classes
        scores, target = fixed_pair_scores(model, emb, data.unseen.labels, EVAL_PAIRS, EVAL_SEED)
        at_threshold = pair_metrics(scores, target, ckpt.threshold)
        summary["unseen_pair_acc"] = at_threshold.accuracy
        summary["unseen_far"], summary["unseen_frr"] = at_threshold.far, at_threshold.frr
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).exists():
            update_metadata(run_dir / name, {"final": summary})
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def threshold_origin(val_protocol: str) -> str:
    """Which classes the calibrated threshold was tuned on, in words: validation classes never
    trained on (20 or more training classes), or held-out examples of the training classes
    themselves (fewer), which says little about new classes."""
    if val_protocol == "held-out classes":
        return "validation classes held out of training"
    return "examples of the training classes (too few classes to hold some out)"


def _one_shot(model: SiameseNet, emb: torch.Tensor, data: LabeledImages) -> dict:
    """Up-to-10-way one-shot accuracy on `data` from its embeddings ``[N, D]``: the episodes
    `siamnet evaluate` draws for that N (`EVAL_EPISODES`, `EVAL_SEED`)."""
    fs = few_shot_accuracy(
        model,
        emb,
        data.labels.to(emb.device),
        ways=min(10, data.num_classes),
        shots=1,
        queries=1,
        episodes=EVAL_EPISODES,
        seed=EVAL_SEED,
    )
    return fs.to_dict()
