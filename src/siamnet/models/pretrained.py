"""Published ImageNet weights for the ``resnet18`` backbone, found on this machine only.

``siamnet train --model resnet18 --pretrained`` starts from torchvision's ImageNet ResNet-18
(``ResNet18_Weights.IMAGENET1K_V1``, He et al. 2016) instead of random weights: the usual start
for natural images, where a few training classes are far too few to learn features from. The
weights are never downloaded here: they are read from torch's hub cache, where torchvision puts
them (``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth``), or from a path given with
``--pretrained PATH``; they are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from siamnet.errors import ArgumentError

#: torchvision's file name for ``ResNet18_Weights.IMAGENET1K_V1`` (its hash prefix included).
RESNET18_IMAGENET_FILE = "resnet18-f37072fd.pth"
RESNET18_IMAGENET_URL = f"https://download.pytorch.org/models/{RESNET18_IMAGENET_FILE}"

#: ImageNet's per-channel statistics (RGB, 0..1), which the weights expect; grey images use
#: their mean (the first layer's filters are summed over RGB for them, see `adapt_first_layer`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalization(channels: int) -> dict[str, object]:
    """The input normalisation the ImageNet weights were trained with, for 1 or 3 channels."""
    if channels == 3:
        return {"scale": 255.0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {
        "scale": 255.0,
        "mean": [sum(IMAGENET_MEAN) / 3],
        "std": [sum(IMAGENET_STD) / 3],
    }


def find_resnet18_weights(where: str | os.PathLike[str] | None = None) -> Path:
    """The ImageNet ResNet-18 weight file: `where` if given (a file, or a folder holding
    `RESNET18_IMAGENET_FILE`), else torch's hub cache. One-line `ArgumentError` if absent."""
    if where is not None:
        path = Path(where)
        path = path / RESNET18_IMAGENET_FILE if path.is_dir() else path
        if not path.is_file():
            raise ArgumentError(f"--pretrained {where}: no such weight file")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_IMAGENET_FILE
    if not path.is_file():
        raise ArgumentError(
            f"--pretrained: no ImageNet ResNet-18 weights on this machine (looked for {path}); "
            f"download {RESNET18_IMAGENET_URL} where there is a network and put it there, or "
            "pass --pretrained PATH"
        )
    return path


def load_resnet18_weights(path: str | os.PathLike[str], in_channels: int) -> dict:
    """The weight file's state dict for a ResNet-18 backbone without its classifier, its first
    layer adapted to `in_channels`; loaded with ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        reason = " ".join(str(exc).split())[:160]
        raise ArgumentError(f"--pretrained {path}: not a readable weight file ({reason})") from exc
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ArgumentError(f"--pretrained {path}: not a ResNet-18 state dict (no conv1.weight)")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = adapt_first_layer(state["conv1.weight"], in_channels, path)
    return state


def adapt_first_layer(weight: torch.Tensor, in_channels: int, path: object) -> torch.Tensor:
    """RGB filters ``[64, 3, k, k]`` for `in_channels` inputs: summed over RGB for grey
    images (a grey image is R = G = B, so the response is unchanged), kept for colour."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ArgumentError(
            f"--pretrained {path}: conv1.weight has shape {list(weight.shape)}, expected "
            "[64, 3, 7, 7]"
        )
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    raise ArgumentError(f"--pretrained: images have {in_channels} channels, expected 1 or 3")
