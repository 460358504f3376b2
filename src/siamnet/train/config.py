"""Every training argument (`TrainConfig`), filled from a preset by `resolved`."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamnet.data.sources.builtin import DEFAULT_DATA, DEFAULT_HELD_OUT_CLASSES
from siamnet.errors import ArgumentError, SiamnetError
from siamnet.models.backbones import is_timm_name
from siamnet.objectives import OBJECTIVES
from siamnet.presets import (
    BACKBONE_LR_FACTOR,
    PRETRAINED_BACKBONE_LR_FACTOR,
    PROXY_LR_FACTOR,
    RUN_DEFAULTS,
    is_photo_network,
    preset_values,
)


class TrainingError(SiamnetError):
    """Training cannot go on (a non-finite loss, an unusable resume folder)."""


@dataclass
class TrainConfig:
    """Every training argument; ``None`` means "not given: take it from the preset" (or from
    `siamnet.presets.RUN_DEFAULTS`, which every preset shares). `resolved` fills them in and
    `validate` checks the whole configuration before anything touches the disk."""

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
    scale: float | None = None
    proxy_lr: float | None = None
    mining: str | None = None
    pairs: str | None = None
    examples_per_class: int | None = None
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None
    temperature: str | None = None
    rotate_classes: bool | str | None = None
    koch_init: bool | None = None
    pretrained: str | None = None
    backbone_lr_factor: float | None = None
    freeze_bn: bool | None = None
    photo: bool | str | None = None
    val_fraction: float | None = None
    val_classes_fraction: float | None = None
    val_pairs: int | None = None
    val_episodes: int | None = None
    val_ways: int | None = None
    patience: int | None = None
    log_every: int | None = None
    seed: int | None = None
    device: str | None = None
    workers: int | None = None
    loader_workers: int | None = None
    cache: str | None = None
    amp: str | None = None
    compile: bool = False
    memory_format: str | None = None
    out: str | None = None
    log: str | None = None
    centring: str | None = None
    overwrite: bool = False
    resume: str | None = None
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled from the preset, then from `RUN_DEFAULTS` (given
        values win)."""
        out = dataclasses.replace(self)
        for key, value in {**RUN_DEFAULTS, **preset_values(self.preset)}.items():
            if getattr(out, key, None) is None:
                setattr(out, key, value)
        if out.data is None:
            out.data = DEFAULT_DATA
            if out.eval_classes is None and out.eval_fraction is None and self.preset != "seed":
                out.eval_classes = list(DEFAULT_HELD_OUT_CLASSES)
        objective = OBJECTIVES.get(out.loss) if isinstance(out.loss, str) else None
        if out.rotate_classes is None:
            # part of the default recipe where the objective was measured with it, and only on
            # data with enough classes ("auto": decided by prepare_data; bench/RESULTS.md)
            rotates = self.preset in (None, "default") and bool(
                objective and objective.rotate_classes_by_default
            )
            out.rotate_classes = "auto" if rotates else False
        if out.photo is None:
            # the default recipe on photographs (decided by build_training_model once the data
            # is read: siamnet.presets.is_photo), with its own model or one made for photos
            photo_model = self.model is None or is_photo_network(self.model)
            out.photo = "auto" if photo_model and self.preset in (None, "default") else False
        if out.backbone_lr_factor is None:
            out.backbone_lr_factor = (
                PRETRAINED_BACKBONE_LR_FACTOR if out.pretrained else BACKBONE_LR_FACTOR
            )
        if out.image_size is None and is_timm_name(out.model):
            from siamnet.models.pretrained import timm_input_size

            out.image_size = timm_input_size(out.model)  # the size its weights were trained at
        if out.margin is None:
            out.margin = objective.default_margin if objective else 0.2
        if out.scale is None and objective is not None:
            out.scale = objective.default_scale
        if out.proxy_lr is None and isinstance(out.lr, (int, float)):
            out.proxy_lr = out.lr * PROXY_LR_FACTOR
        if (self.epochs is not None or self.steps_per_epoch is not None) and self.preset in (
            None,
            "default",
        ):
            # a length given by hand is the length: no budget or early stop unless asked
            if self.time_budget is None:
                out.time_budget = 0.0
            if self.patience is None:
                out.patience = 0
        return out

    def validate(self) -> TrainConfig:
        """Check a resolved configuration whole (names against the registries, schedules
        parsed, numbers in range, the output folder usable) and return it; the first problem
        is raised as a one-line `ArgumentError` naming its flag. Reads and writes nothing."""
        from siamnet.train.checks import check_config

        check_config(self)
        return self

    def given(self) -> dict[str, Any]:
        """The arguments that were set (not ``None``, flags not ``False``), by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "extra"
            and getattr(self, f.name) is not None
            and getattr(self, f.name) is not False
        }

    def to_json(self) -> dict[str, Any]:
        """Every argument as JSON-ready values: the run's ``training_args``, and the format of
        ``siamnet train --config`` (`from_file`)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["extra"] = dict(self.extra)
        d["image_size"] = list(self.image_size) if self.image_size else None
        for name in ("data", "test_data"):  # data given in memory is not recorded
            if d[name] is not None and not isinstance(d[name], str):
                d[name] = None
        if d["model"] is not None and not isinstance(d["model"], str):
            d["model"] = backbone_name(d["model"])
        return d

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """The arguments in a JSON or YAML file (``.yaml``/``.yml``), in the format of a run's
        ``training_args`` (`to_json`, ``siamnet train --print-config``); a key that is not an
        argument is refused in one line naming it."""
        values = read_config_file(Path(path))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ArgumentError(
                f"--config {path}: unknown key {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + f"; the keys are the training arguments: {', '.join(sorted(known))}"
            )
        if values.get("image_size") is not None:
            size = values["image_size"]
            values["image_size"] = tuple(size) if isinstance(size, list) else size
        values.setdefault("extra", {})
        return cls(**values)


def read_config_file(path: Path) -> dict[str, Any]:
    """A configuration file's mapping (JSON, or YAML where PyYAML is installed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArgumentError(f"--config {path}: cannot read it ({exc})") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ArgumentError(
                f"--config {path}: YAML needs PyYAML (pip install pyyaml); or write it as JSON"
            ) from exc
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ArgumentError(f"--config {path}: not valid YAML ({exc})") from exc
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArgumentError(
                f"--config {path}: not valid JSON (line {exc.lineno}: {exc.msg})"
            ) from exc
    if not isinstance(values, dict):
        raise ArgumentError(f"--config {path}: expected a mapping of argument names to values")
    return values


def backbone_name(module: Any) -> str:
    """How a checkpoint names a backbone given as a module: ``package.module:Class``."""
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"
