"""Every training argument (`TrainConfig`), filled from a preset by `resolved`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from siamnet.errors import SiamnetError
from siamnet.objectives import OBJECTIVES
from siamnet.presets import preset_values


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
    pairs: str | None = None
    examples_per_class: int | None = None
    ways: int | None = None
    shots: int = 1
    queries: int = 5
    temperature: str = "learned"
    rotate_classes: bool | str | None = None
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
        objective = OBJECTIVES.get(out.loss) if isinstance(out.loss, str) else None
        if out.rotate_classes is None and self.preset in (None, "default"):
            # part of the default recipe where the objective was measured with it, and only on
            # data with enough classes ("auto": decided by prepare_data; bench/RESULTS.md)
            rotates = bool(objective and objective.rotate_classes_by_default)
            out.rotate_classes = "auto" if rotates else False
        if out.margin is None:
            out.margin = objective.default_margin if objective else 0.2
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
            ("pairs", "sampled"),
            ("examples_per_class", 4),
            ("ways", 20),
        ):
            if getattr(out, name) is None:
                setattr(out, name, default)
        return out

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d
