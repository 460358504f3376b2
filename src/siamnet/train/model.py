"""The model a run trains, and how it runs: mixed precision and memory layout."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
from pathlib import Path

import torch
from torch import nn

from siamnet.errors import ArgumentError
from siamnet.models.backbones import KochNet, is_timm_name
from siamnet.models.pretrained import (
    find_resnet18_weights,
    find_timm_weights,
    imagenet_normalization,
    load_resnet18_weights,
    load_timm_pretrained,
)
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model
from siamnet.objectives import Objective, ObjectiveSettings, get_objective
from siamnet.presets import (
    PHOTO_MODEL,
    PHOTO_QUERIES,
    PHOTO_TEMPERATURE,
    PHOTO_WAYS,
    PRESETS,
    is_photo,
    is_photo_network,
)
from siamnet.train.config import TrainConfig, backbone_name
from siamnet.train.data import TrainData, normalization_for


def pretrained_weights(cfg: TrainConfig) -> Path | None:
    """The weight file ``--pretrained`` names (None without it, or when resuming: a resumed
    run has its own weights); refused in one line before anything is written."""
    if not cfg.pretrained or cfg.resume:
        return None
    where = None if cfg.pretrained == "imagenet" else cfg.pretrained
    if is_timm_name(cfg.model):
        return find_timm_weights(cfg.model, where)
    if cfg.model != "resnet18":
        raise ArgumentError(
            f"--pretrained: weights exist for resnet18 (ImageNet) and timm:NAME models, not "
            f"{cfg.model}"
        )
    return find_resnet18_weights(where)


def photo_recipe(cfg: TrainConfig, data: TrainData) -> bool:
    """Whether the run trains unit-length embeddings with the photo temperature (``--photo``;
    by default the default recipe does on photographs, `siamnet.presets.is_photo`)."""
    if cfg.photo == "auto":
        return is_photo(data.train.channels, data.train.image_size)
    return bool(cfg.photo)


def photo_episodes(cfg: TrainConfig, data: TrainData, episodes_given: bool) -> TrainConfig:
    """`cfg` with the default recipe's episodes on photographs (`PHOTO_WAYS`-way,
    `PHOTO_QUERIES` queries) where the default recipe trains on photographs and neither
    ``--ways`` nor ``--queries`` was given; else `cfg` as it is."""
    if episodes_given or cfg.photo != "auto" or cfg.loss != PRESETS["default"]["loss"]:
        return cfg
    if not is_photo(data.train.channels, data.train.image_size):
        return cfg
    return dataclasses.replace(cfg, ways=PHOTO_WAYS, queries=PHOTO_QUERIES)


def model_name(cfg: TrainConfig, photo: bool) -> str:
    """The backbone's name in the checkpoint: ``resnet18-imagenet`` for ImageNet's layout,
    `PHOTO_MODEL` for the default recipe on photographs, else ``--model``."""
    if cfg.pretrained and cfg.model == "resnet18":
        return "resnet18-imagenet"
    if photo and cfg.photo == "auto" and not is_photo_network(cfg.model):
        return PHOTO_MODEL
    return cfg.model


def build_training_model(
    cfg: TrainConfig,
    data: TrainData,
    generator: torch.Generator,
    objective: Objective | None = None,
) -> SiameseNet:
    """A fresh model for `objective` (default: ``cfg.loss``'s): its head kind, embedding
    normalisation and temperature; pretrained weights with ``--pretrained`` (ImageNet's for
    resnet18, timm's for ``timm:NAME``), Koch et al.'s initialisation with ``--preset koch``,
    unit-length embeddings and a sharper starting temperature on photographs
    (`photo_recipe`), batch-norm statistics frozen with ``--freeze-bn``."""
    objective = get_objective(objective or cfg.loss)
    own = cfg.model if isinstance(cfg.model, nn.Module) else None
    photo = photo_recipe(cfg, data)
    timm_model = own is None and is_timm_name(cfg.model)
    spec = ModelSpec(
        model=backbone_name(own) if own else model_name(cfg, photo),
        loss=objective.name,
        head=objective.head,
        in_channels=data.train.channels,
        image_size=data.train.image_size,
        normalization=(
            imagenet_normalization(data.train.channels)
            if cfg.pretrained and cfg.model == "resnet18"
            else normalization_for(cfg, data.train)
        ),
        embedding_norm=objective.embedding_norm or photo,
        learned_temperature=objective.learned_temperature(ObjectiveSettings.of(cfg)),
    )
    torch.manual_seed(cfg.seed)
    weights = pretrained_weights(cfg)
    if timm_model and weights is not None:
        backbone = load_timm_pretrained(cfg.model, weights, spec.in_channels, spec.image_size)
        model = build_model(spec, backbone=backbone)
    else:
        model = build_model(spec, backbone=own)
        if weights is not None:
            model.backbone.load_state_dict(load_resnet18_weights(weights, spec.in_channels))
    if cfg.koch_init and isinstance(model.backbone, KochNet):
        model.backbone.reset_parameters_as_paper(generator)
        for p in model.head.parameters():
            nn.init.normal_(p, 0.0 if p.dim() > 1 else 0.5, 2e-1 if p.dim() > 1 else 1e-2)
    if photo and model.log_temperature is not None:
        with torch.no_grad():
            model.log_temperature.fill_(math.log(PHOTO_TEMPERATURE))
    if cfg.freeze_bn:
        freeze_batch_norm(model.backbone)
    model.spec = spec
    return model


def _eval_only(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def freeze_batch_norm(module: nn.Module) -> int:
    """Keep every batch-norm layer of `module` in eval mode, ``train()`` or not: it normalises
    with its running statistics and never updates them (its scale and shift still learn), as
    when fine-tuning a pretrained network on small batches. Returns how many layers."""
    frozen = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = types.MethodType(_eval_only, m)
            m.eval()
            frozen += 1
    return frozen


def autocast_context(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles): there bf16
    autocast makes the training step 1.6-2.9× faster (bench/train_throughput.py). CPUs with
    AVX-512 BF16 but no AMX run the step 1.4-1.7× faster in bf16 too, but there the default
    recipe on the built-in digits ended lower (4-way 1-shot 0.746 against 0.773 in float32,
    one seed), so ``auto`` keeps float32 on them and ``--amp bf16`` asks for it."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision of the training step: ``auto`` is bf16 on CUDA that supports it (fp16
    otherwise) and on CPUs with AMX (`cpu_has_fast_bf16`), off elsewhere (MPS included).
    Validation, evaluation and inference always run in float32."""
    if cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
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
