"""The optimiser and its schedule: parameter groups (Koch et al.'s per-layer rates),
learning-rate factors per epoch, the ``plateau`` schedule and Koch's rising momentum."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from siamnet.errors import ArgumentError
from siamnet.train.config import TrainConfig


def parameter_groups(cfg: TrainConfig, model: nn.Module) -> list[dict[str, Any]]:
    """One group of all parameters, or with ``--preset koch`` one group per layer with its own
    learning rate, final momentum and L2 weight, as Koch et al. (2015) train. With a
    ``--backbone-lr-factor`` other than 1, each group is split in two: the backbone's
    parameters at that multiple of the group's rate, the rest (head, temperature) at it."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.koch_init:
        groups = [
            {
                "params": params,
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "final_momentum": cfg.momentum,
            }
        ]
        return split_backbone(groups, model, cfg.backbone_lr_factor)
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
    return split_backbone(groups, model, cfg.backbone_lr_factor)


def split_backbone(
    groups: list[dict[str, Any]], model: nn.Module, factor: float | None
) -> list[dict[str, Any]]:
    """`groups` with each one's backbone parameters (``model.backbone``) moved to a group of
    their own at `factor` × its learning rate; unchanged when `factor` is 1 (or None) or the
    model has no backbone, so that optimiser states saved with one group still load."""
    backbone = getattr(model, "backbone", None)
    if factor is None or factor == 1.0 or not isinstance(backbone, nn.Module):
        return groups
    inside = {id(p) for p in backbone.parameters()}
    out = []
    for group in groups:
        mine = [p for p in group["params"] if id(p) in inside]
        rest = [p for p in group["params"] if id(p) not in inside]
        if mine:
            out.append({**group, "params": mine, "lr": group["lr"] * factor})
        if rest:
            out.append({**group, "params": rest})
    return out


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


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, objective_parameters: nn.Module | None = None
) -> torch.optim.Optimizer:
    """The optimiser of `model`'s parameter groups, and of the objective's own parameters
    (class proxies) in a group of their own at ``--proxy-lr``, without weight decay."""
    groups = parameter_groups(cfg, model)
    if objective_parameters is not None:
        groups.append(
            {
                "params": list(objective_parameters.parameters()),
                "lr": cfg.proxy_lr,
                "weight_decay": 0.0,
                "final_momentum": cfg.momentum,
            }
        )
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
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    scale: float = 1.0,
    total_epochs: int | None = None,
) -> float:
    """Apply this epoch's learning rates (and Koch's linearly rising momentum); `scale` is the
    ``plateau`` schedule's factor; `total_epochs` the length the schedule spans (default
    ``--epochs``; a budgeted run's planned length). Returns the first group's learning rate."""
    factor = lr_factor(cfg.schedule, epoch, total_epochs or cfg.epochs) * scale
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
        if cfg.optimizer == "sgd" and cfg.momentum_start is not None:
            frac = min(1.0, epoch / max(1, cfg.momentum_ramp_epochs))
            target = group["final_momentum"]
            group["momentum"] = cfg.momentum_start + frac * (target - cfg.momentum_start)
    return optimizer.param_groups[0]["lr"]
