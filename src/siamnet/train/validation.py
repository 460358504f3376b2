"""Validation after each epoch, and the final calibration and test of the best model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from siamnet.checkpoint import load_checkpoint, update_metadata
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import fixed_pairs
from siamnet.evaluate import (
    best_accuracy_threshold,
    few_shot_accuracy,
    pair_accuracy,
    pair_scores,
    rank_auc,
)
from siamnet.fileio import atomic_write_text
from siamnet.models.embed import embed_images
from siamnet.models.siamese import SiameseNet
from siamnet.train.config import TrainConfig
from siamnet.train.data import TrainData
from siamnet.train.rundir import RunState


def fixed_pair_scores(
    model: SiameseNet, emb: torch.Tensor, labels: torch.Tensor, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[P]`` (on the CPU) and targets ``[P]`` of `count` seeded balanced pairs drawn
    from `labels` ``[N]``, scored from the embeddings ``[N, D]``."""
    left, right, target = fixed_pairs(labels, count, seed=seed)
    scores = pair_scores(model, emb, left.to(emb.device), right.to(emb.device))
    return scores.cpu(), target


@torch.no_grad()
def validate(
    cfg: TrainConfig, model: SiameseNet, val: LabeledImages, device: torch.device
) -> dict[str, float]:
    """Validation pair accuracy (threshold tuned on the same pairs, and at the head's
    natural threshold) and N-way one-shot accuracy on the validation data."""
    emb = embed_images(model, val.images, device=device)
    scores, target = fixed_pair_scores(model, emb, val.labels, cfg.val_pairs, cfg.seed + 1)
    threshold = best_accuracy_threshold(scores, target)
    accuracy = pair_accuracy(scores, target, threshold)
    ways = min(cfg.val_ways, _classes_with(val.labels, 2))
    out = {"val_pair_acc": accuracy, "val_auc": rank_auc(scores, target), "threshold": threshold}
    if ways >= 2:
        fs = few_shot_accuracy(
            model,
            emb,
            val.labels.to(device),
            ways=ways,
            shots=1,
            queries=1,
            episodes=cfg.val_episodes,
            seed=cfg.seed + 2,
        )
        out.update(val_oneshot_acc=fs.accuracy, val_oneshot_ways=ways)
    else:
        out.update(val_oneshot_acc=accuracy, val_oneshot_ways=0)
    return out


@torch.no_grad()
def test_pair_accuracy(
    cfg: TrainConfig, model: SiameseNet, test: LabeledImages, device: torch.device, threshold: float
) -> float:
    """Accuracy on 10,000 fixed test pairs at the threshold tuned on validation pairs."""
    emb = embed_images(model, test.images, device=device)
    scores, target = fixed_pair_scores(model, emb, test.labels, 10000, cfg.seed + 3)
    return pair_accuracy(scores, target, threshold)


def _classes_with(labels: torch.Tensor, min_count: int) -> int:
    return int((torch.bincount(labels) >= min_count).sum())


def finish(
    cfg: TrainConfig, data: TrainData, run_dir: Path, device: torch.device, state: RunState
) -> dict[str, Any]:
    """Calibrate on validation pairs, evaluate the best model on test and unseen classes."""
    best_path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    ckpt = load_checkpoint(best_path, device=device)
    model = ckpt.model
    summary: dict[str, Any] = {
        "run": str(run_dir),
        "model": cfg.model,
        "loss": cfg.loss,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_by": state.stopped_by or "epochs",
        "time_budget": cfg.time_budget or None,
        "train_seconds": round(state.seconds, 2),
        "wall_seconds": round(state.wall_seconds, 2),
        "images_seen": state.images_seen,
        "threshold": ckpt.threshold,
        "val_protocol": data.val_protocol,
    }
    if data.test is not None and data.test.num_classes >= 2:
        emb = embed_images(model, data.test.images, device=device)
        scores, target = fixed_pair_scores(model, emb, data.test.labels, 10000, cfg.seed + 3)
        summary["test_pair_acc"] = pair_accuracy(scores, target, ckpt.threshold)
        summary["test_auc"] = rank_auc(scores, target)
        summary["test_classes"] = "seen in training"
        summary["test_oneshot"] = _one_shot(model, emb, data.test, cfg.seed + 6)
    if data.unseen is not None and data.unseen.num_classes >= 2:
        emb = embed_images(model, data.unseen.images, device=device)
        summary["oneshot"] = _one_shot(model, emb, data.unseen, cfg.seed + 4)
        summary["unseen_classes"] = data.unseen.classes
        scores, target = fixed_pair_scores(model, emb, data.unseen.labels, 10000, cfg.seed + 5)
        summary["unseen_pair_acc"] = pair_accuracy(scores, target, ckpt.threshold)
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).exists():
            update_metadata(run_dir / name, {"final": summary})
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _one_shot(model: SiameseNet, emb: torch.Tensor, data: LabeledImages, seed: int) -> dict:
    """Up-to-10-way one-shot accuracy on `data` over 1,000 seeded episodes, from its
    embeddings ``[N, D]``."""
    fs = few_shot_accuracy(
        model,
        emb,
        data.labels.to(emb.device),
        ways=min(10, data.num_classes),
        shots=1,
        queries=1,
        episodes=1000,
        seed=seed,
    )
    return fs.to_dict()
