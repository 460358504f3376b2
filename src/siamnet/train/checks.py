"""`check_config`: a resolved `TrainConfig` checked whole before anything touches the disk.

Names are checked against the registries (backbones, objectives, presets) and the fixed
vocabularies of `siamnet.presets.CHOICES`, the schedule is parsed, every number is checked
against its range, and the output folder against what ``--out``/``--overwrite`` may do to it.
The first problem is raised as one `ArgumentError` line naming its flag.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from siamnet.errors import ArgumentError
from siamnet.presets import CHOICES, PRESETS

if TYPE_CHECKING:
    from siamnet.train.config import TrainConfig

#: ``(field, lowest allowed value)`` of the integer arguments.
INTEGER_MINIMUMS: dict[str, int] = {
    "epochs": 1,
    "steps_per_epoch": 1,
    "batch_size": 1,
    "ways": 2,
    "shots": 1,
    "queries": 1,
    "examples_per_class": 2,
    "val_pairs": 2,
    "val_episodes": 1,
    "val_ways": 2,
    "patience": 0,
    "log_every": 0,
    "momentum_ramp_epochs": 0,
    "seed": 0,
    "workers": 0,
    "loader_workers": 0,
}

#: ``(field, low, high, low included, high included)`` of the real-valued arguments.
REAL_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "lr": (0.0, math.inf, False, False),
    "weight_decay": (0.0, math.inf, True, False),
    "momentum": (0.0, 1.0, True, True),
    "momentum_start": (0.0, 1.0, True, True),
    "margin": (0.0, math.inf, False, False),
    "scale": (0.0, math.inf, False, False),
    "proxy_lr": (0.0, math.inf, False, False),
    "backbone_lr_factor": (0.0, math.inf, True, False),
    "time_budget": (0.0, math.inf, True, False),
    "eval_fraction": (0.0, 1.0, False, False),
    "val_fraction": (0.0, 1.0, False, False),
    "val_classes_fraction": (0.0, 1.0, True, False),
}


def flag(name: str) -> str:
    """The flag of a `TrainConfig` field: ``steps_per_epoch`` -> ``--steps-per-epoch``."""
    return "--" + name.replace("_", "-")


def check_config(cfg: TrainConfig) -> None:
    """Raise `ArgumentError` for the first unusable argument of the resolved `cfg`."""
    check_names(cfg)
    for name, low in INTEGER_MINIMUMS.items():
        check_integer(name, getattr(cfg, name), low)
    for name, (low, high, low_ok, high_ok) in REAL_RANGES.items():
        value = getattr(cfg, name)
        if value is not None:
            check_real(name, value, low, high, low_ok, high_ok)
    check_data_arguments(cfg)
    from siamnet.train.experiment_log import check_logger

    check_logger(cfg.log)
    from siamnet.device import resolve_device

    resolve_device(cfg.device)
    from siamnet.train.rundir import check_run_dir

    check_run_dir(cfg)


def check_names(cfg: TrainConfig) -> None:
    """``--preset``, ``--model``, ``--loss``, ``--schedule`` and the fixed vocabularies."""
    from torch import nn

    from siamnet.models.backbones import BACKBONES, check_timm_name, is_timm_name
    from siamnet.objectives import OBJECTIVES
    from siamnet.train.optim import lr_factor

    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise ArgumentError(f"--preset {cfg.preset!r}: expected one of {', '.join(PRESETS)}")
    if is_timm_name(cfg.model):
        check_timm_name(cfg.model)
    elif not isinstance(cfg.model, nn.Module) and cfg.model not in BACKBONES:
        raise ArgumentError(
            f"--model {cfg.model!r}: expected one of {', '.join(BACKBONES)} or timm:NAME"
        )
    if cfg.loss not in OBJECTIVES:
        raise ArgumentError(f"--loss {cfg.loss!r}: expected one of {', '.join(OBJECTIVES)}")
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ArgumentError(f"{flag(name)} {value!r}: expected one of {', '.join(allowed)}")
    if not isinstance(cfg.schedule, str):
        raise ArgumentError(f"--schedule {cfg.schedule!r}: expected a schedule name")
    lr_factor(cfg.schedule, 0, 1)  # raises the one-line error of an unknown schedule
    if cfg.schedule.startswith("exp:") and not 0.0 < float(cfg.schedule[4:]) < math.inf:
        raise ArgumentError(f"--schedule {cfg.schedule}: GAMMA must be a positive number")
    if cfg.rotate_classes not in (True, False, "auto"):
        raise ArgumentError(f"--rotate-classes {cfg.rotate_classes!r}: expected on or off")
    if cfg.centring == "on":
        from siamnet.models.heads import HEADS

        head = OBJECTIVES[cfg.loss].head
        if HEADS[head].has_weights:
            raise ArgumentError(
                f"--centring on: the {head} head of --loss {cfg.loss} learned its weights on "
                "uncentred embeddings; centring is for distance heads (euclidean, cosine)"
            )
    if cfg.pretrained and cfg.model != "resnet18" and not is_timm_name(cfg.model):
        raise ArgumentError(
            f"--pretrained: weights exist for resnet18 (ImageNet) and timm:NAME models, not "
            f"{cfg.model}"
        )
    for name in ("freeze_bn", "photo"):
        value = getattr(cfg, name)
        if value not in (True, False) and not (name == "photo" and value == "auto"):
            raise ArgumentError(f"{flag(name)} {value!r}: expected on or off")


def check_integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{flag(name)} {value!r}: expected a whole number")
    if value < low:
        raise ArgumentError(f"{flag(name)} {value}: must be at least {low}")


def check_real(name: str, value: Any, low: float, high: float, low_ok: bool, high_ok: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{flag(name)} {value!r}: expected a number")
    above = value >= low if low_ok else value > low
    below = value <= high if high_ok else value < high
    if not (math.isfinite(value) and above and below):
        where = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
        raise ArgumentError(f"{flag(name)} {value!r}: must be a finite number in {where}")


def check_data_arguments(cfg: TrainConfig) -> None:
    """``--image-size``, ``--eval-classes``/``--eval-fraction`` (the data itself is checked
    when it is read, still before the run folder is touched)."""
    from siamnet.images import check_image_size

    if cfg.image_size is not None:
        from siamnet.checkpoint import MAX_IMAGE_SIDE

        try:
            check_image_size(cfg.image_size)
        except ArgumentError as exc:
            raise ArgumentError(f"--image-size: {exc}") from exc
        if max(cfg.image_size) > MAX_IMAGE_SIDE:
            raise ArgumentError(
                f"--image-size {cfg.image_size[0]}x{cfg.image_size[1]}: each side must be at "
                f"most {MAX_IMAGE_SIDE} pixels"
            )
    if cfg.eval_classes is not None:
        names = [str(c).strip() for c in cfg.eval_classes]
        if not names or not all(names):
            raise ArgumentError("--eval-classes: expected a comma-separated list of class names")
        if cfg.eval_fraction is not None:
            raise ArgumentError("--eval-classes and --eval-fraction: give one of them, not both")
