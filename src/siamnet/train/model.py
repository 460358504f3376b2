"""The model a run trains, and how it runs: mixed precision and memory layout."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from siamnet.errors import ArgumentError
from siamnet.models.backbones import KochNet
from siamnet.models.pretrained import (
    find_resnet18_weights,
    imagenet_normalization,
    load_resnet18_weights,
)
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model
from siamnet.objectives import Objective, ObjectiveSettings, get_objective
from siamnet.train.config import TrainConfig, backbone_name
from siamnet.train.data import TrainData, normalization_for


def pretrained_weights(cfg: TrainConfig) -> Path | None:
    """The weight file ``--pretrained`` names (None without it, or when resuming: a resumed
    run has its own weights); refused in one line before anything is written."""
    if not cfg.pretrained or cfg.resume:
        return None
    if cfg.model != "resnet18":
        raise ArgumentError(f"--pretrained: ImageNet weights exist for resnet18, not {cfg.model}")
    return find_resnet18_weights(None if cfg.pretrained == "imagenet" else cfg.pretrained)


def build_training_model(
    cfg: TrainConfig,
    data: TrainData,
    generator: torch.Generator,
    objective: Objective | None = None,
) -> SiameseNet:
    """A fresh model for `objective` (default: ``cfg.loss``'s): its head kind, embedding
    normalisation and temperature; ImageNet weights with ``--pretrained``, Koch et al.'s
    initialisation with ``--preset koch``."""
    objective = get_objective(objective or cfg.loss)
    own = cfg.model if isinstance(cfg.model, nn.Module) else None
    spec = ModelSpec(
        model="resnet18-imagenet" if cfg.pretrained else backbone_name(own) if own else cfg.model,
        loss=objective.name,
        head=objective.head,
        in_channels=data.train.channels,
        image_size=data.train.image_size,
        normalization=(
            imagenet_normalization(data.train.channels)
            if cfg.pretrained
            else normalization_for(cfg, data.train)
        ),
        embedding_norm=objective.embedding_norm,
        learned_temperature=objective.learned_temperature(ObjectiveSettings.of(cfg)),
    )
    torch.manual_seed(cfg.seed)
    weights = pretrained_weights(cfg)
    model = build_model(spec, backbone=own)
    if weights is not None:
        model.backbone.load_state_dict(load_resnet18_weights(weights, spec.in_channels))
    if cfg.koch_init and isinstance(model.backbone, KochNet):
        model.backbone.reset_parameters_as_paper(generator)
        for p in model.head.parameters():
            nn.init.normal_(p, 0.0 if p.dim() > 1 else 0.5, 2e-1 if p.dim() > 1 else 1e-2)
    model.spec = spec
    return model


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
