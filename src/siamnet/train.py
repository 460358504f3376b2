"""Training a Siamese network, top to bottom.

`fit(config)` loads the data, splits it, builds the model, then alternates `train_epoch` and
`validate`, writing ``last.pt`` every epoch and ``best.pt`` by validation one-shot accuracy,
``metrics.csv`` and ``curves.png``. At the end it calibrates the decision threshold on
validation pairs and measures test pair accuracy and one-shot accuracy on classes held out from
training. Every random draw comes from seeded generators whose state is checkpointed, so a run
resumed with ``--resume`` ends with the same weights as one that was never stopped (on CPU).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamnet import __version__
from siamnet.checkpoint import (
    load_checkpoint,
    read_checkpoint_payload,
    save_checkpoint,
    update_metadata,
)
from siamnet.data.augment import AffineRanges, random_affine
from siamnet.data.class_augment import with_rotated_classes
from siamnet.data.episodes import EpisodeSampler
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import PairSampler, PKSampler, fixed_pairs
from siamnet.data.registry import load_dataset
from siamnet.data.splits import split_by_class, split_by_example
from siamnet.device import resolve_device
from siamnet.distributed import (
    DistInfo,
    all_true,
    barrier,
    broadcast_buffers,
    broadcast_flag,
    broadcast_float,
    device_for_rank,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from siamnet.errors import ArgumentError, SiamnetError
from siamnet.evaluate import (
    best_accuracy_threshold,
    embed_images,
    few_shot_accuracy,
    pair_accuracy,
    pair_scores,
    rank_auc,
)
from siamnet.fileio import atomic_write_text, remove_stale_temps
from siamnet.models.backbones import KochNet
from siamnet.models.losses import bce_loss, contrastive_loss, prototypical_loss, triplet_loss
from siamnet.models.pretrained import (
    find_resnet18_weights,
    imagenet_normalization,
    load_resnet18_weights,
)
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model
from siamnet.presets import preset_values
from siamnet.progress import progress


class TrainingError(SiamnetError):
    """Training cannot go on (a non-finite loss, an unusable resume folder)."""


@dataclass
class TrainConfig:
    """Every training argument; ``None`` means "take it from the preset"."""

    data: str | None = None
    test_data: str | None = None
    eval_classes: list[str] | None = None
    eval_fraction: float | None = None
    image_size: tuple[int, int] | None = None
    preset: str | None = None
    model: str | None = None
    loss: str | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    time_budget: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    momentum_start: float | None = None
    momentum_ramp_epochs: int | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    augment: str | None = None
    normalize: str | None = None
    margin: float | None = None
    mining: str = "semihard"
    examples_per_class: int = 4
    ways: int = 20
    shots: int = 1
    queries: int = 5
    temperature: str = "learned"
    rotate_classes: bool | None = None
    koch_init: bool | None = None
    pretrained: str | None = None
    val_fraction: float = 0.15
    val_classes_fraction: float = 0.2
    val_pairs: int = 2000
    val_episodes: int = 300
    val_ways: int = 20
    patience: int | None = None
    log_every: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    amp: str = "auto"
    compile: bool = False
    memory_format: str = "auto"
    out: str = "runs/default"
    overwrite: bool = False
    resume: str | None = None
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled from the preset (given values win)."""
        values = preset_values(self.preset)
        out = dataclasses.replace(self)
        for key, value in values.items():
            if getattr(out, key, None) is None:
                setattr(out, key, value)
        if out.data is None:
            out.data = "digits"
            if out.eval_classes is None and out.eval_fraction is None and self.preset != "seed":
                out.eval_classes = ["6", "7", "8", "9"]
        if out.rotate_classes is None and self.preset in (None, "default"):
            # part of the default recipe, measured with the episodic loss only (bench/RESULTS.md)
            out.rotate_classes = out.loss == "proto"
        if out.margin is None:
            out.margin = 1.0 if out.loss == "contrastive" else 0.2
        if (self.epochs is not None or self.steps_per_epoch is not None) and self.preset in (
            None,
            "default",
        ):
            # a length given by hand is the length: no budget or early stop unless asked
            if self.time_budget is None:
                out.time_budget = 0.0
            if self.patience is None:
                out.patience = 0
        for name, default in (
            ("patience", 0),
            ("time_budget", 0.0),
            ("momentum", 0.9),
            ("log_every", 0),
            ("rotate_classes", False),
            ("koch_init", False),
            ("momentum_ramp_epochs", 0),
        ):
            if getattr(out, name) is None:
                setattr(out, name, default)
        return out

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d


# --- data ------------------------------------------------------------------------------------


@dataclass
class TrainData:
    """The splits one run uses. `unseen` holds classes never seen in training, if any."""

    train: LabeledImages
    val: LabeledImages
    val_protocol: str
    test: LabeledImages | None
    unseen: LabeledImages | None
    notes: list[str]


def prepare_data(cfg: TrainConfig) -> TrainData:
    """Load ``--data`` (and ``--test-data``), hold out evaluation classes, split validation."""
    dataset = load_dataset(cfg.data, cfg.image_size)
    train = dataset.train
    test = load_dataset(cfg.test_data, cfg.image_size).train if cfg.test_data else dataset.test
    notes = list(train.notes)
    unseen = None
    if cfg.eval_classes or cfg.eval_fraction:
        train, unseen = split_by_class(
            train, eval_classes=cfg.eval_classes, eval_fraction=cfg.eval_fraction, seed=cfg.seed
        )
        if test is not None:  # the test split's examples of the held-out classes are unseen too
            held = [c for c in unseen.classes if c in test.classes]
            kept = [c for c in train.classes if c in test.classes]
            if held:
                unseen = _concat(unseen, test.select_classes(test.class_ids(held)))
            test = test.select_classes(test.class_ids(kept)) if kept else None
    elif test is not None and not set(test.classes) & set(train.classes):
        unseen, test = test, None  # e.g. Omniglot's evaluation alphabets
    if test is not None and (test.channels, test.image_size) != (train.channels, train.image_size):
        raise ArgumentError(
            f"--test-data {cfg.test_data}: images are {test.channels}×{test.image_size}, "
            f"training images {train.channels}×{train.image_size}; pass --image-size"
        )
    use_classes = train.num_classes >= 20 and cfg.val_classes_fraction > 0
    if use_classes:
        train, val = split_by_class(train, eval_fraction=cfg.val_classes_fraction, seed=cfg.seed)
        protocol = "held-out classes"
    else:
        train, val = split_by_example(train, cfg.val_fraction, seed=cfg.seed)
        protocol = "held-out examples of training classes"
    if cfg.rotate_classes:
        train = with_rotated_classes(train)
        notes.append(f"training classes ×4 by 90° rotations: {train.num_classes} classes")
    return TrainData(train, val, protocol, test, unseen, notes)


def _concat(a: LabeledImages, b: LabeledImages) -> LabeledImages:
    """Examples of `a` and `b`, classes matched by name (b's classes must be in a)."""
    ids = torch.tensor(a.class_ids(b.classes), dtype=torch.int64)
    return LabeledImages(
        images=torch.cat([a.images, b.images]),
        labels=torch.cat([a.labels, ids[b.labels]]),
        classes=a.classes,
        groups=a.groups,
        source=a.source,
        notes=a.notes,
    )


def normalization_for(cfg: TrainConfig, train: LabeledImages) -> dict[str, Any]:
    """``raw`` (0..255, the post), ``unit`` (0..1) or ``standard`` (per-channel mean/std)."""
    c = train.channels
    if cfg.normalize == "raw":
        return {"scale": 1.0, "mean": [0.0] * c, "std": [1.0] * c}
    if cfg.normalize == "unit":
        return {"scale": 255.0, "mean": [0.0] * c, "std": [1.0] * c}
    if cfg.normalize == "standard":
        x = train.images[:20000].double() / 255.0
        mean = x.mean(dim=(0, 2, 3)).tolist()
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        return {"scale": 255.0, "mean": mean, "std": std}
    raise ArgumentError(f"--normalize {cfg.normalize!r}: expected raw, unit or standard")


# --- model and optimiser ---------------------------------------------------------------------


def pretrained_weights(cfg: TrainConfig) -> Path | None:
    """The weight file ``--pretrained`` names (None without it, or when resuming: a resumed
    run has its own weights); refused in one line before anything is written."""
    if not cfg.pretrained or cfg.resume:
        return None
    if cfg.model != "resnet18":
        raise ArgumentError(f"--pretrained: ImageNet weights exist for resnet18, not {cfg.model}")
    return find_resnet18_weights(None if cfg.pretrained == "imagenet" else cfg.pretrained)


def build_training_model(
    cfg: TrainConfig, data: TrainData, generator: torch.Generator
) -> SiameseNet:
    spec = ModelSpec(
        model="resnet18-imagenet" if cfg.pretrained else cfg.model,
        loss=cfg.loss,
        in_channels=data.train.channels,
        image_size=data.train.image_size,
        normalization=(
            imagenet_normalization(data.train.channels)
            if cfg.pretrained
            else normalization_for(cfg, data.train)
        ),
        embedding_norm=cfg.loss in ("contrastive", "triplet"),
        learned_temperature=cfg.loss == "proto" and cfg.temperature == "learned",
    )
    torch.manual_seed(cfg.seed)
    weights = pretrained_weights(cfg)
    model = build_model(spec)
    if weights is not None:
        model.backbone.load_state_dict(load_resnet18_weights(weights, spec.in_channels))
    if cfg.koch_init and isinstance(model.backbone, KochNet):
        model.backbone.reset_parameters_as_paper(generator)
        for p in model.head.parameters():
            nn.init.normal_(p, 0.0 if p.dim() > 1 else 0.5, 2e-1 if p.dim() > 1 else 1e-2)
    model.spec = spec
    return model


def parameter_groups(cfg: TrainConfig, model: nn.Module) -> list[dict[str, Any]]:
    """One group of all parameters, or with ``--preset koch`` one group per layer with its own
    learning rate, final momentum and L2 weight, as Koch et al. (2015) train."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.koch_init:
        return [
            {
                "params": params,
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "final_momentum": cfg.momentum,
            }
        ]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    groups = []
    for i, layer in enumerate(layers):
        lr, momentum, l2 = KOCH_LAYERS[min(i, len(KOCH_LAYERS) - 1)]
        groups.append(
            {
                "params": list(layer.parameters()),
                "lr": lr * cfg.lr / KOCH_LAYERS[0][0],
                "weight_decay": l2,
                "final_momentum": momentum,
            }
        )
    seen = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in params if id(p) not in seen]
    if rest:
        groups.append(
            {"params": rest, "lr": cfg.lr, "weight_decay": 0.0, "final_momentum": cfg.momentum}
        )
    return groups


#: Per-layer (learning rate, final momentum, L2 weight) for ``--preset koch``: conv1..conv4,
#: the 4096-unit layer, the L1 head. The paper searched lr in [1e-4, 1e-1], momentum in [0, 1]
#: and L2 in [0, 0.1] per layer and did not publish its choice; these are one choice in those
#: ranges (smaller steps and more L2 for the wide fully connected layers).
KOCH_LAYERS = [
    (1e-2, 0.9, 2e-4),
    (1e-2, 0.9, 2e-4),
    (1e-2, 0.9, 2e-4),
    (1e-2, 0.9, 2e-4),
    (5e-3, 0.9, 1e-3),
    (5e-3, 0.9, 1e-3),
]


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(cfg, model)
    for g in groups:
        g["initial_lr"] = g["lr"]
    if cfg.optimizer == "sgd":
        momentum = cfg.momentum_start if cfg.momentum_start is not None else cfg.momentum
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ArgumentError(f"--optimizer {cfg.optimizer!r}: expected sgd, adam or adamw")


#: ``--schedule plateau``: the learning rate is halved after this many epochs in a row without a
#: better validation one-shot accuracy (counted again from each halving).
PLATEAU_EPOCHS = 2


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for 0-based `epoch`: ``none``, ``cosine``, ``step`` (×0.1 at
    half and three quarters) or ``exp:G`` (×G per epoch; Koch et al. use 0.99). ``plateau``
    depends on validation instead (see `plateau_scale`), so its factor here is 1."""
    if schedule in ("none", "plateau"):
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    if schedule == "step":
        return 0.1 ** sum(epoch >= m for m in (epochs // 2, (3 * epochs) // 4))
    if schedule.startswith("exp:"):
        try:
            return float(schedule[4:]) ** epoch
        except ValueError:
            pass
    raise ArgumentError(
        f"--schedule {schedule!r}: expected none, cosine, step, plateau or exp:GAMMA"
    )


def plateau_scale(scale: float, epochs_without_improvement: int) -> float:
    """The ``plateau`` schedule's learning-rate scale after an epoch: halved each time
    `epochs_without_improvement` reaches a multiple of `PLATEAU_EPOCHS`."""
    if epochs_without_improvement and epochs_without_improvement % PLATEAU_EPOCHS == 0:
        return scale * 0.5
    return scale


def set_epoch_hyperparameters(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, epoch: int, scale: float = 1.0
) -> float:
    """Apply this epoch's learning rates (and Koch's linearly rising momentum); `scale` is the
    ``plateau`` schedule's factor. Returns the first group's learning rate."""
    factor = lr_factor(cfg.schedule, epoch, cfg.epochs) * scale
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
        if cfg.optimizer == "sgd" and cfg.momentum_start is not None:
            frac = min(1.0, epoch / max(1, cfg.momentum_ramp_epochs))
            target = group["final_momentum"]
            group["momentum"] = cfg.momentum_start + frac * (target - cfg.momentum_start)
    return optimizer.param_groups[0]["lr"]


# --- one step per loss -----------------------------------------------------------------------


class BatchMaker:
    """Draws training batches of indices for the chosen loss, from a seeded CPU generator."""

    def __init__(self, cfg: TrainConfig, train: LabeledImages) -> None:
        self.cfg = cfg
        labels = train.labels
        if cfg.loss in ("bce", "contrastive"):
            self.pairs = PairSampler(labels)
        elif cfg.loss == "triplet":
            k = cfg.examples_per_class
            self.pk = PKSampler(labels, max(2, cfg.batch_size // k), k)
        elif cfg.loss == "proto":
            ways = min(cfg.ways, train.num_classes)
            self.episodes = EpisodeSampler(
                labels, ways, cfg.shots, cfg.queries, skip_small_classes=True
            )
            self.ways = ways
        else:
            raise ArgumentError(f"--loss {cfg.loss!r}: expected bce, contrastive, triplet or proto")

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.cfg.loss in ("bce", "contrastive"):
            left, right, target = self.pairs.sample_indices(self.cfg.batch_size, generator)
            return {"left": left, "right": right, "target": target}
        if self.cfg.loss == "triplet":
            return {"index": self.pk.sample_indices(generator)}
        ep = self.episodes.sample(generator)
        return {
            "support": ep.support,
            "support_labels": ep.support_labels,
            "query": ep.query,
            "query_labels": ep.query_labels,
        }


def compute_loss(
    cfg: TrainConfig,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    augment: Any,
) -> tuple[torch.Tensor, float]:
    """Loss and batch accuracy of one batch. `images` uint8 ``[N, C, H, W]`` on the device;
    `augment` maps a float batch to a distorted one (or is None)."""
    dev = images.device

    def fetch(index: torch.Tensor) -> torch.Tensor:
        x = images.index_select(0, index.to(dev)).float()
        return augment(x) if augment is not None else x

    if cfg.loss == "bce":
        target = batch["target"].to(dev)
        logits = model(fetch(batch["left"]), fetch(batch["right"]))
        acc = ((logits.detach() > 0).float() == target).float().mean().item()
        return bce_loss(logits.float(), target), acc
    if cfg.loss == "contrastive":
        target = batch["target"].to(dev)
        n = len(target)
        emb = model(fetch(torch.cat([batch["left"], batch["right"]]))).float()
        a, b = emb[:n], emb[n:]
        d = torch.linalg.vector_norm(a.detach() - b.detach(), dim=-1)
        acc = ((d < cfg.margin / 2).float() == target).float().mean().item()
        return contrastive_loss(a, b, target, cfg.margin), acc
    if cfg.loss == "triplet":
        index = batch["index"].to(dev)
        emb = model(fetch(index)).float()
        y = labels[index]
        with torch.no_grad():
            d = torch.cdist(emb, emb).fill_diagonal_(float("inf"))
            acc = (y[d.argmin(1)] == y).float().mean().item()
        return triplet_loss(emb, y, cfg.margin, cfg.mining), acc
    ns, nq = len(batch["support"]), len(batch["query"])
    emb = model(fetch(torch.cat([batch["support"], batch["query"]]))).float()
    base = getattr(getattr(model, "_orig_mod", model), "module", model)
    temp = base.log_temperature.exp() if base.log_temperature is not None else 1.0
    ways = int(batch["support_labels"].max()) + 1
    loss, acc = prototypical_loss(
        emb[:ns],
        batch["support_labels"].to(dev),
        emb[ns : ns + nq],
        batch["query_labels"].to(dev),
        ways,
        temp,
    )
    return loss, acc.item()


# --- epochs ----------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a resumed run needs besides weights and optimizer state."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    images_seen: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    lr_scale: float = 1.0
    stopped_by: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


def autocast_context(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision: ``auto`` is bf16 on CUDA that supports it, off elsewhere."""
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cfg.amp in ("bf16", "fp16"):
        return torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    raise ArgumentError(f"--amp {cfg.amp!r}: expected auto, off, bf16 or fp16")


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Channels-last activations: ``auto`` on CPU and CUDA (training steps 1.1-1.7× faster on a
    CPU, see bench/train_throughput.py; the layout tensor cores want), not on MPS, where
    support varies."""
    if cfg.memory_format == "auto":
        return device.type in ("cpu", "cuda")
    if cfg.memory_format in ("channels-last", "contiguous"):
        return cfg.memory_format == "channels-last"
    raise ArgumentError(
        f"--memory-format {cfg.memory_format!r}: expected auto, channels-last or contiguous"
    )


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
    augment = None
    if cfg.augment == "affine":
        ranges = AffineRanges()
        augment = lambda x: random_affine(x, generators["augment"], ranges)  # noqa: E731
    elif cfg.augment != "none":
        raise ArgumentError(f"--augment {cfg.augment!r}: expected none or affine")
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
            loss, acc = compute_loss(cfg, model, batch, images, labels, augment)
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
        seen += sum(
            len(v) for k, v in batch.items() if k in ("left", "right", "index", "support", "query")
        )
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


# --- bookkeeping -----------------------------------------------------------------------------


METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_pair_acc",
    "val_auc",
    "val_oneshot_acc",
    "val_oneshot_ways",
    "test_pair_acc",
    "lr",
    "images_seen",
    "seconds",
]


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The whole history, rewritten atomically (so a killed run never leaves half a line)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def draw_curves(run_dir: Path, loss: str | None = None) -> None:
    """Redraw ``curves.png`` from ``metrics.csv`` (skipped if plotting is unavailable)."""
    try:
        from siamnet.plots.curves import plot_training_curves
    except ImportError:
        return
    plot_training_curves(run_dir / "metrics.csv", run_dir / "curves.png", loss)


def metadata_for(
    cfg: TrainConfig, model: SiameseNet, data: TrainData, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "siamnet_version": __version__,
        "model_spec": model.spec.to_dict(),
        "classes": data.train.classes,
        "unseen_classes": data.unseen.classes if data.unseen is not None else [],
        "threshold": extra.get("threshold", 0.5 if model.spec.head == "l1" else -cfg.margin / 2),
        "threshold_source": extra.get("threshold_source", "default"),
        "val_protocol": data.val_protocol,
        "training_args": cfg.to_json(),
        **{k: v for k, v in extra.items() if k not in ("threshold", "threshold_source")},
    }


def training_state(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    generators: dict[str, torch.Generator],
    state: RunState,
) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "generators": {k: g.get_state() for k, g in generators.items()},
        "torch_rng": torch.get_rng_state(),
        "run_state": json.dumps(dataclasses.asdict(state)),
    }


#: The files a run folder holds that training rewrites (atomically, through temporaries).
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "curves.png", "summary.json")


def prepare_run_dir(cfg: TrainConfig, info: DistInfo) -> Path:
    """Create the run folder; refuse to overwrite one that has files unless ``--overwrite``."""
    run_dir = Path(cfg.out)
    if cfg.resume:
        if info.is_main:  # temporaries of a writer killed mid-write (never the live files)
            remove_stale_temps(run_dir, unmarked_for=RUN_FILES)
        barrier(info)
        return run_dir
    if info.is_main:
        if run_dir.exists() and any(run_dir.iterdir()):
            if not cfg.overwrite:
                raise ArgumentError(
                    f"--out {run_dir}: folder exists and is not empty; pass --overwrite to replace "
                    f"it or --resume {run_dir} to continue it"
                )
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    return run_dir


#: What ``--resume`` may change: how much longer the run goes on, and where and how quietly
#: it runs. Everything else is the run's own and a differing value is refused.
RESUME_MAY_CHANGE = ("epochs", "time_budget", "patience", "device", "workers", "quiet")


def config_for_resume(cfg: TrainConfig) -> TrainConfig:
    """The stored training arguments of ``--resume DIR``, with the few that may change
    (`RESUME_MAY_CHANGE`) taken from `cfg`; any other argument of `cfg` that was given (differs
    from its default) and differs from the stored value is refused with one line."""
    last = Path(cfg.resume) / "last.pt"
    if not last.is_file():
        raise TrainingError(f"--resume {cfg.resume}: no last.pt in that folder to continue from")
    stored = dict(read_checkpoint_payload(last)["metadata"]["training_args"])
    stored["image_size"] = tuple(stored["image_size"]) if stored.get("image_size") else None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    resumed = TrainConfig(**{k: v for k, v in stored.items() if k in known})
    conflicts = resume_conflicts(cfg, resumed)
    if conflicts:
        raise ArgumentError(
            f"--resume {cfg.resume}: {'; '.join(conflicts)}; a resumed run keeps its training "
            f"arguments (only --{', --'.join(n.replace('_', '-') for n in RESUME_MAY_CHANGE)} "
            "may change): start a new run with --out to change them"
        )
    resumed.resume, resumed.out = cfg.resume, cfg.resume
    for name in RESUME_MAY_CHANGE:
        given = getattr(cfg, name)
        if given is not None and given != getattr(TrainConfig, name, None):
            setattr(resumed, name, given)
    resumed.device, resumed.quiet = cfg.device, cfg.quiet
    return resumed


def resume_conflicts(given: TrainConfig, stored: TrainConfig) -> list[str]:
    """``--flag VALUE differs from the run's STORED`` for each argument of `given` that was set
    (differs from the dataclass default) and differs from `stored`."""
    defaults = TrainConfig()
    out = []
    if given.overwrite:
        out.append("--overwrite cannot be combined with it")
    if given.out != defaults.out and Path(given.out).resolve() != Path(given.resume).resolve():
        out.append(f"--out {given.out} differs from the run's own folder")
    skip = {*RESUME_MAY_CHANGE, "resume", "out", "overwrite", "extra"}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(given, f.name)
        if f.name in skip or value is None or value == getattr(defaults, f.name):
            continue
        if value != getattr(stored, f.name):
            flag = "--" + f.name.replace("_", "-")
            shown = ",".join(value) if isinstance(value, list) else value
            out.append(f"{flag} {shown} differs from the run's {getattr(stored, f.name)}")
    return out


# --- the whole run ---------------------------------------------------------------------------


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train as `config` says; returns the final summary (also written to ``summary.json``)."""
    cfg = config_for_resume(config) if config.resume else config.resolved()
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    device = device_for_rank(device, info)
    try:
        return _fit(cfg, device, info)
    finally:
        shutdown(info)


def _fit(cfg: TrainConfig, device: torch.device, info: DistInfo) -> dict[str, Any]:
    if cfg.workers > 0:
        torch.set_num_threads(cfg.workers)
    for name in ("epochs", "steps_per_epoch", "batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise ArgumentError(f"--{name.replace('_', '-')} must be at least 1")
    pretrained_weights(cfg)
    data = prepare_data(cfg)
    run_dir = prepare_run_dir(cfg, info)
    generators = {
        "sample": torch.Generator().manual_seed(cfg.seed * 1_000_003 + info.rank),
        "augment": torch.Generator().manual_seed(cfg.seed * 1_000_033 + 7 + info.rank),
    }
    model = build_training_model(cfg, data, torch.Generator().manual_seed(cfg.seed))
    model.to(device)
    if use_channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)  # 4-D weights; activations follow them
    optimizer = build_optimizer(cfg, model)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    state = RunState()
    if cfg.resume:
        state = _restore(run_dir / "last.pt", model, optimizer, scaler, generators, device)
    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    images = data.train.images.to(device)
    labels = data.train.labels.to(device)
    batches = BatchMaker(cfg, data.train)
    if info.is_main:
        _announce(cfg, data, device, info)
    stop = False
    wall_start, wall_before = time.perf_counter(), state.wall_seconds
    while state.epoch < cfg.epochs and not stop:
        epoch = state.epoch
        lr = set_epoch_hyperparameters(cfg, optimizer, epoch, state.lr_scale)
        epoch_start = start = time.perf_counter()
        loss, acc, seen = train_epoch(
            cfg, train_model, optimizer, scaler, batches, images, labels, generators, epoch, info
        )
        broadcast_buffers(model, info)
        loss = mean_over_ranks(loss, info, device)
        acc = mean_over_ranks(acc, info, device)
        state.seconds += time.perf_counter() - start
        state.images_seen += seen * info.world_size
        state.epoch += 1
        if info.is_main:
            val = validate(cfg, model, data.val, device)
            if data.test is not None and data.test.num_classes >= 2:
                val["test_pair_acc"] = test_pair_accuracy(
                    cfg, model, data.test, device, val["threshold"]
                )
            row = {
                "epoch": epoch + 1,
                "train_loss": loss,
                "train_acc": acc,
                "lr": lr,
                "images_seen": state.images_seen,
                "seconds": round(state.seconds, 2),
                **val,
            }
            state.history.append(row)
            improved = val["val_oneshot_acc"] > state.best_score
            if improved:
                state.best_score, state.best_epoch = val["val_oneshot_acc"], epoch + 1
                state.epochs_without_improvement = 0
            else:
                state.epochs_without_improvement += 1
                if cfg.schedule == "plateau":
                    state.lr_scale = plateau_scale(state.lr_scale, state.epochs_without_improvement)
            now = time.perf_counter()
            state.wall_seconds = row["wall_seconds"] = wall_before + (now - wall_start)
            state.stopped_by = stop_reason(cfg, state, now - epoch_start)
            extra = {
                "epoch": epoch + 1,
                "threshold": val["threshold"],
                "threshold_source": "best accuracy on validation pairs",
                "validation": val,
            }
            meta = metadata_for(cfg, model, data, extra)
            if improved:
                save_checkpoint(run_dir / "best.pt", model, meta)
            save_checkpoint(
                run_dir / "last.pt",
                model,
                meta,
                training_state(optimizer, scaler, generators, state),
            )
            write_metrics_csv(run_dir / "metrics.csv", state.history)
            _log_tensorboard(run_dir, row)
            draw_curves(run_dir, cfg.loss)
            if not cfg.quiet:
                print(_epoch_line(row, cfg), file=sys.stderr, flush=True)
            stop = state.stopped_by not in ("", "epochs")
        stop = broadcast_flag(stop, info, device)
        state.lr_scale = broadcast_float(state.lr_scale, info, device)
    in_sync = ranks_in_sync(model, info, device)
    barrier(info)
    if not info.is_main:
        return {}
    summary = finish(cfg, data, run_dir, device, state)
    if info.enabled:
        summary.update(world_size=info.world_size, ranks_in_sync=in_sync)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def stop_reason(cfg: TrainConfig, state: RunState, last_epoch_seconds: float) -> str:
    """Why the run ends after this epoch (``""``: it goes on). ``time budget`` when one more
    epoch as long as the last would overrun ``cfg.time_budget`` seconds of wall time."""
    if state.epoch >= cfg.epochs:
        return "epochs"
    if cfg.patience and state.epochs_without_improvement >= cfg.patience:
        return "early stopping"
    if cfg.time_budget and state.wall_seconds + last_epoch_seconds > cfg.time_budget:
        return "time budget"
    return ""


@torch.no_grad()
def ranks_in_sync(model: nn.Module, info: DistInfo, device: torch.device) -> bool:
    """Whether every rank holds exactly rank 0's weights (a check that DDP did its job)."""
    if not info.enabled:
        return True
    import torch.distributed as dist

    flat = torch.cat([t.detach().float().flatten() for t in model.state_dict().values()]).to(device)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    return all_true(bool(torch.equal(flat, reference)), info, device)


def _restore(path, model, optimizer, scaler, generators, device) -> RunState:
    ckpt = load_checkpoint(path, device=device, model=model)
    training = ckpt.training
    if not training:
        raise TrainingError(f"{path}: holds no training state to resume from")
    optimizer.load_state_dict(training["optimizer"])
    if scaler is not None and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    for name, g in generators.items():
        g.set_state(training["generators"][name])
    torch.set_rng_state(training["torch_rng"])
    return RunState(**json.loads(training["run_state"]))


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


def _announce(cfg: TrainConfig, data: TrainData, device: torch.device, info: DistInfo) -> None:
    if cfg.quiet:
        return
    unseen = f", {data.unseen.num_classes} unseen classes held out" if data.unseen else ""
    print(
        f"training {cfg.model}/{cfg.loss} on {cfg.data}: {len(data.train)} images of "
        f"{data.train.num_classes} classes{unseen}; validation: {data.val_protocol}; "
        f"device {device}" + (f" × {info.world_size} processes" if info.enabled else ""),
        file=sys.stderr,
        flush=True,
    )


def _epoch_line(row: dict[str, Any], cfg: TrainConfig) -> str:
    ways = row.get("val_oneshot_ways", 0)
    budget = f" of {cfg.time_budget:.0f}s budget" if cfg.time_budget else ""
    return (
        f"epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.4f}, train acc "
        f"{row['train_acc']:.3f}, val pair acc {row['val_pair_acc']:.3f}, "
        f"val {ways}-way one-shot {row['val_oneshot_acc']:.3f}, lr {row['lr']:.2g} "
        f"({row['seconds']:.0f}s training, {row.get('wall_seconds', 0):.0f}s{budget})"
    )


def _log_tensorboard(run_dir: Path, row: dict[str, Any]) -> None:
    if os.environ.get("SIAMNET_NO_TENSORBOARD"):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, row["epoch"])
