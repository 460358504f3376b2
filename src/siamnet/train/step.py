"""Batches and steps: the objective draws each batch and computes its loss; `train_epoch`
runs ``--steps-per-epoch`` of them with the optimiser. `BatchFeed` brings each batch's images
to the device: from the training images held there, or decoded per batch by loader workers when
the images stay on disk (`siamnet.data.streaming`); the batches drawn are the same."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from siamnet.data.augment import batch_augmentation
from siamnet.data.labeled import LabeledImages
from siamnet.data.streaming import BatchDraws, batch_loader, rows_lookup
from siamnet.distributed import DistInfo, all_true
from siamnet.errors import ArgumentError
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


#: One step's input: the batch of indices, the rows its images are (None: `images` holds every
#: training image) and the images uint8 ``[M, C, H, W]`` on the device.
Feed = tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor]


class BatchFeed:
    """The batches of a run, ``steps_per_epoch`` an epoch, each drawn by `batches` from
    `generator` in this process, with its images on `device`: the training images held in
    memory are moved to the device once; images on disk (`LabeledImages.streamed`) are decoded
    per batch by ``cfg.loader_workers`` processes, which decode only the rows each batch
    names, so the run is the same either way."""

    def __init__(
        self,
        cfg: TrainConfig,
        train: LabeledImages,
        batches: BatchMaker,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self.batches, self.generator, self.device = batches, generator, device
        self.steps = cfg.steps_per_epoch
        self.images: torch.Tensor | None = None
        self.loader = None
        if not train.streamed:
            self.images = train.images.to(device)
            return
        keys = batches.objective.image_keys
        if not keys:
            raise ArgumentError(
                f"objective {batches.objective.name!r} names no image_keys, so the images of "
                "its batches cannot be read from disk; pass --cache on to hold them in memory"
            )
        draws = BatchDraws(batches, generator, self.steps)
        self.loader = batch_loader(
            train.images, keys, draws, cfg.loader_workers, pin_memory=device.type == "cuda"
        )

    def epoch(self) -> Iterator[Feed]:
        """The ``steps_per_epoch`` batches of one epoch, in order."""
        if self.loader is None:
            for _ in range(self.steps):
                yield self.batches(self.generator), None, self.images
            return
        for batch, rows, images in self.loader:
            yield batch, rows.to(self.device), images.to(self.device, non_blocking=True)


def compute_loss(
    cfg: TrainConfig,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    augment: Any,
    objective: Objective | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Loss and batch accuracy of one batch by the objective (default: ``cfg.loss``'s).
    `images` uint8 ``[N, C, H, W]`` on the device: every training image, or with `rows`
    (sorted int64 ``[N]``) only those rows; `augment` maps a float batch to a distorted one (or
    is None)."""
    dev = images.device

    def fetch(index: torch.Tensor) -> torch.Tensor:
        at = index.to(dev) if rows is None else rows_lookup(rows, index.to(dev))
        x = images.index_select(0, at).float()
        return augment(x) if augment is not None else x

    settings = ObjectiveSettings.of(cfg)
    return get_objective(objective or cfg.loss).step(settings, model, batch, fetch, labels)


def train_epoch(
    cfg: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    feed: BatchFeed,
    labels: torch.Tensor,
    generators: dict[str, torch.Generator],
    epoch: int,
    info: DistInfo,
) -> tuple[float, float, int]:
    """One epoch of `cfg.steps_per_epoch` steps of `feed`; returns mean loss, mean accuracy,
    images seen."""
    model.train()
    device = feed.device
    batches = feed.batches
    augment = batch_augmentation(cfg.augment, generators["augment"])
    total_loss = total_acc = 0.0
    running_loss = running_acc = 0.0
    seen = 0
    bar = progress(
        feed.epoch(),
        total=cfg.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        disable=None if info.is_main and not cfg.quiet else True,
    )
    for step, (batch, rows, images) in enumerate(bar):
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(cfg, device):
            loss, acc = compute_loss(
                cfg, model, batch, images, labels, augment, batches.objective, rows
            )
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
