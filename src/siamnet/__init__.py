"""siamnet: Siamese networks and one-shot image recognition in PyTorch.

Everything the command line does, a notebook can do with the same functions::

    import siamnet

    summary = siamnet.fit(out="runs/digits")       # built-in digits, 6-9 held out; or data=...
    model = siamnet.load_checkpoint("runs/digits")
    report = siamnet.evaluate_checkpoint(model, siamnet.load_dataset("digits")).report
    result = siamnet.compare(model, image_a, image_b)                # uint8 [C, H, W] each
    vectors = siamnet.embed(model, images)                           # [N, D]

The names below are imported on first use, so ``import siamnet`` (and the command line's
``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from siamnet.errors import ArgumentError, CheckpointError, DataError, SiamnetError

__version__ = "0.1.0"

#: Public name -> ``module:attribute`` it lives in.
API: dict[str, str] = {
    # data
    "load_dataset": "siamnet.data.registry:load_dataset",
    "as_dataset": "siamnet.data.in_memory:as_dataset",
    "Dataset": "siamnet.data.dataset:Dataset",
    "LabeledImages": "siamnet.data.labeled:LabeledImages",
    # training
    "TrainConfig": "siamnet.train.config:TrainConfig",
    "fit": "siamnet.train.loop:fit",
    "PRESETS": "siamnet.presets:PRESETS",
    # models and objectives, by name
    "BACKBONES": "siamnet.models.backbones:BACKBONES",
    "register_backbone": "siamnet.models.backbones:register_backbone",
    "OBJECTIVES": "siamnet.objectives:OBJECTIVES",
    "Objective": "siamnet.objectives:Objective",
    "register_objective": "siamnet.objectives:register_objective",
    "HEADS": "siamnet.models.heads:HEADS",
    "SiameseNet": "siamnet.models.siamese:SiameseNet",
    "ModelSpec": "siamnet.models.siamese:ModelSpec",
    "build_model": "siamnet.models.siamese:build_model",
    # using a model
    "load_checkpoint": "siamnet.checkpoint:load_checkpoint",
    "Checkpoint": "siamnet.checkpoint:Checkpoint",
    "embed": "siamnet.api:embed",
    "compare": "siamnet.infer:compare",
    "build_support": "siamnet.infer:build_support",
    "classify": "siamnet.infer:classify",
    "Gallery": "siamnet.gallery.store:Gallery",
    "build_gallery": "siamnet.gallery.store:build_gallery",
    "add_to_gallery": "siamnet.gallery.store:add_to_gallery",
    "load_gallery": "siamnet.gallery.store:load_gallery",
    "search": "siamnet.gallery.search:search",
    # (``siamnet.evaluate`` and ``siamnet.export`` are the packages these live in)
    "evaluate_checkpoint": "siamnet.evaluate.protocol:evaluate_checkpoint",
    "calibrate_checkpoint": "siamnet.evaluate.protocol:calibrate_checkpoint",
    "export_model": "siamnet.export:export_model",
    # sharing: a safetensors folder every verb loads, and the Hugging Face Hub
    "save_pretrained": "siamnet.sharing:save_pretrained",
    "from_pretrained": "siamnet.sharing:from_pretrained",
    "push_to_hub": "siamnet.sharing:push_to_hub",
}

__all__ = [
    "API",
    "ArgumentError",
    "CheckpointError",
    "DataError",
    "SiamnetError",
    "__version__",
    *API,
]


def __getattr__(name: str) -> Any:
    """Import a public name of `API` on first use."""
    if name not in API:
        raise AttributeError(f"module 'siamnet' has no attribute {name!r}")
    module, _, attribute = API[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
