"""Batches and steps: the objective draws each batch and computes its loss; `train_epoch`
runs ``--steps-per-epoch`` of them with the optimiser."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from siamnet.data.augment import batch_augmentation
from siamnet.data.labeled import LabeledImages
from siamnet.distributed import DistInfo, all_true
from siamnet.objectives import Objective, ObjectiveSettings, get_objective
from siamnet.progress import progress
from siamnet.train.config import TrainConfig, TrainingError
from siamnet.train.model import autocast_context


class BatchMaker:
    """Draws training batches of indices for the objective (default: ``cfg.loss``'s), from a
    seeded CPU generator."""

    def __init__(
        self, cfg: TrainConfig, train: LabeledImages, objective: Objective | None = None
    ) -> None:
        self.cfg = cfg
        self.objective = get_objective(objective or cfg.loss)
        self.draw = self.objective.sampler(ObjectiveSettings.of(cfg), train)

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.draw(generator)


def compute_loss(
    cfg: TrainConfig,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    augment: Any,
    objective: Objective | None = None,
) -> tuple[torch.Tensor, float]:
    """Loss and batch accuracy of one batch by the objective (default: ``cfg.loss``'s).
    `images` uint8 ``[N, C, H, W]`` on the device; `augment` maps a float batch to a
    distorted one (or is None)."""
    dev = images.device

    def fetch(index: torch.Tensor) -> torch.Tensor:
        x = images.index_select(0, index.to(dev)).float()
        return augment(x) if augment is not None else x

    settings = ObjectiveSettings.of(cfg)
    return get_objective(objective or cfg.loss).step(settings, model, batch, fetch, labels)


def train_epoch(
    cfg: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    batches: BatchMaker,
    images: torch.Tensor,
    labels: torch.Tensor,
    generators: dict[str, torch.Generator],
    epoch: int,
    info: DistInfo,
) -> tuple[float, float, int]:
    """One epoch of `cfg.steps_per_epoch` steps; returns mean loss, mean accuracy, images seen."""
    model.train()
    device = images.device
    augment = batch_augmentation(cfg.augment, generators["augment"])
    total_loss = total_acc = 0.0
    running_loss = running_acc = 0.0
    seen = 0
    bar = progress(
        range(cfg.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        disable=None if info.is_main and not cfg.quiet else True,
    )
    for step in bar:
        batch = batches(generators["sample"])
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(cfg, device):
            loss, acc = compute_loss(cfg, model, batch, images, labels, augment, batches.objective)
        if not all_true(bool(torch.isfinite(loss).item()), info, device):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; lower --lr "
                f"(now {cfg.lr}); the last good checkpoint is kept in {cfg.out}"
            )
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        value = loss.item()
        total_loss += value
        total_acc += acc
        seen += batches.objective.images_in(batch)
        if cfg.log_every and info.is_main:  # the blog post's log line
            running_loss += value
            running_acc += acc
            if step % cfg.log_every == 0:
                print(
                    "[%d, %5d] loss: %.6f accuracy: %.2f"  # noqa: UP031 - the post's own line
                    % (
                        epoch + 1,
                        step + 1,
                        running_loss / cfg.log_every,
                        running_acc / cfg.log_every,
                    ),
                    flush=True,
                )
                running_loss = running_acc = 0.0
        bar.set_postfix(loss=f"{total_loss / (step + 1):.4f}", acc=f"{total_acc / (step + 1):.3f}")
    bar.close()
    n = max(1, cfg.steps_per_epoch)
    return total_loss / n, total_acc / n, seen
