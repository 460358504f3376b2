"""Published weights, found on this machine only: ImageNet weights for the ``resnet18``
backbone, and the weights of any timm model (``--model timm:NAME --pretrained``).

``siamnet train --model resnet18 --pretrained`` starts from torchvision's ImageNet ResNet-18
(``ResNet18_Weights.IMAGENET1K_V1``, He et al. 2016) instead of random weights: the usual start
for natural images, where a few training classes are far too few to learn features from. The
weights are never downloaded here: they are read from torch's hub cache, where torchvision puts
them (``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth``), or from a path given with
``--pretrained PATH``; they are loaded with ``weights_only=True``.

``--model timm:NAME --pretrained`` starts from the weights timm publishes for NAME, found where
``timm.create_model(NAME, pretrained=True)`` leaves them (Hugging Face's hub cache, or torch's
hub cache for the older ones), or from ``--pretrained PATH`` (a safetensors file or a torch
state dict). Inputs then get the normalisation of NAME's pretrained configuration.
"""

from __future__ import annotations

import logging
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


# --- timm models -----------------------------------------------------------------------------

#: The weight files a timm model's Hugging Face repository holds, in the order timm reads them.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_hub_cache() -> Path:
    """Hugging Face's hub cache folder, as ``huggingface_hub`` finds it (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / (
        "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _cached_hf_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """A file of model repository `repo_id` in the local hub cache (the snapshot ``refs/main``
    names, else any snapshot), or None; reads the disk only, never the network."""
    repo = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    order = [snapshots / ref.read_text().strip()] if ref.is_file() else []
    order += sorted(p for p in snapshots.iterdir() if p not in order)
    for snapshot in order:
        for filename in filenames:
            if (snapshot / filename).is_file():
                return snapshot / filename
    return None


def find_timm_weights(name: str, where: str | os.PathLike[str] | None = None) -> Path:
    """The weight file for ``timm:NAME``: `where` if given (a safetensors file or a torch state
    dict), else the one timm would download, found in Hugging Face's hub cache or torch's hub
    cache (where ``timm.create_model(NAME, pretrained=True)`` leaves it). Nothing is
    downloaded; absent, one `ArgumentError` line says where to put the file."""
    from siamnet.models.backbones import timm_pretrained_cfg

    if where is not None:
        path = Path(where)
        if not path.is_file():
            raise ArgumentError(
                f"--pretrained {where}: no such weight file (a .safetensors file or a torch "
                "state dict)"
            )
        return path
    cfg = timm_pretrained_cfg(name)
    model = name.partition(":")[2]
    looked = []
    if cfg.get("hf_hub_id"):
        repo_id = cfg["hf_hub_id"]
        filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_WEIGHT_FILES
        found = _cached_hf_file(repo_id, filenames)
        if found is not None:
            return found
        looked.append(str(hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))))
    if cfg.get("url"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg["url"])
        if path.is_file():
            return path
        looked.append(str(path))
    if not looked:
        raise ArgumentError(
            f"--pretrained: timm publishes no weights for {model}; pass --pretrained PATH "
            "(a .safetensors file or a torch state dict)"
        )
    raise ArgumentError(
        f"--pretrained: no weights for {name} on this machine (looked in {' and '.join(looked)}); "
        f"where there is a network, run python -c \"import timm; timm.create_model('{model}', "
        'pretrained=True)" and copy its cache here, or pass --pretrained PATH (a .safetensors '
        "file or a torch state dict)"
    )


class _KeyReport(logging.Handler):
    """Collects what timm's loader says about state-dict keys it could not place."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(("Missing keys", "Unexpected keys")):
            self.messages.append(text)


def load_timm_pretrained(
    name: str, path: str | os.PathLike[str], in_channels: int, image_size: tuple[int, int]
) -> torch.nn.Module:
    """``timm:NAME`` built with the weights of `path` (safetensors, or a torch state dict read
    with ``weights_only=True``; a classifier in the file is dropped, an RGB first layer summed
    for grey images). Hugging Face is kept offline (``HF_HUB_OFFLINE``) for the call. A file
    that does not fit the model (keys missing or left over, shapes that differ, not a weight
    file) is one `ArgumentError` line naming it."""
    from siamnet.models.backbones import timm_backbone

    report = _KeyReport()
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.addHandler(report)
    logger.setLevel(logging.INFO)
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        net = timm_backbone(name, in_channels, image_size, weights_file=os.fspath(path))
    except ArgumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unusable file is the user's to fix
        reason = " ".join(str(exc).split())[:200]
        raise ArgumentError(f"--pretrained {path}: not weights for {name} ({reason})") from exc
    finally:
        logger.removeHandler(report)
        logger.setLevel(level)
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline
    if report.messages:
        kind, _, rest = report.messages[0].partition(" (")
        keys = rest.split(")")[0].split(", ")
        raise ArgumentError(
            f"--pretrained {path}: not weights for {name} ({len(keys)} "
            f"{kind.split()[0].lower()} key(s), e.g. {keys[0]})"
        )
    return net


def timm_normalization(name: str, channels: int) -> dict[str, object]:
    """The input normalisation of ``timm:NAME``'s pretrained configuration (its mean and std,
    on 0..1 pixels), for 1 or 3 channels (grey images: the mean over RGB)."""
    from siamnet.models.backbones import timm_pretrained_cfg

    cfg = timm_pretrained_cfg(name)
    mean = [float(v) for v in cfg.get("mean") or IMAGENET_MEAN]
    std = [float(v) for v in cfg.get("std") or IMAGENET_STD]
    if channels == len(mean):
        return {"scale": 255.0, "mean": mean, "std": std}
    return {"scale": 255.0, "mean": [sum(mean) / len(mean)], "std": [sum(std) / len(std)]}


def timm_input_size(name: str) -> tuple[int, int]:
    """``(H, W)`` of ``timm:NAME``'s pretrained configuration (the size its weights were
    trained at): the training size when no ``--image-size`` is given."""
    from siamnet.models.backbones import timm_pretrained_cfg

    size = timm_pretrained_cfg(name).get("input_size") or (3, 224, 224)
    return int(size[-2]), int(size[-1])
