"""Checkpoints: weights that load without executing code, plus JSON metadata.

A checkpoint is one file written by `torch.save` holding only tensors, numbers, strings, lists
and dicts, so it loads with ``torch.load(weights_only=True)``; nothing in it can run code. It
holds:

- ``format``: ``"siamnet-checkpoint"`` and ``format_version``;
- ``metadata``: a JSON string with the model description (`ModelSpec`), training classes,
  calibrated threshold, package version and the full training arguments;
- ``model``: the model's ``state_dict``;
- ``training`` (``last`` checkpoints only): optimizer state, random states, epoch and history,
  everything `--resume` needs.

Every write goes to a temporary file in the same folder and is renamed into place.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.errors import CheckpointError
from siamnet.fileio import atomic_path
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model

FORMAT = "siamnet-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its metadata and any training state."""

    model: SiameseNet
    metadata: dict[str, Any]
    training: dict[str, Any] | None
    path: Path

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.metadata["model_spec"])

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])


def save_checkpoint(
    path: str | os.PathLike[str],
    model: SiameseNet,
    metadata: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> None:
    """Write `model`'s weights, `metadata` and optional `training` state to `path` atomically."""
    meta = dict(metadata)
    meta.setdefault("siamnet_version", __version__)
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": json.dumps(meta),
        "model": state,
    }
    if training is not None:
        payload["training"] = training
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run folder (its ``best.pt``, else ``last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: a folder with no best.pt or last.pt in it")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file")
    return p


def _reason(exc: BaseException) -> str:
    """One short line saying why torch.load failed (its own detail line when it gives one)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


def read_checkpoint_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload dict of a checkpoint, validated; never executes code from the file."""
    p = resolve_checkpoint_path(path)
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file, not a siamnet checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of odd files
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{p}: refused to load: it holds more than plain weights ({_reason(exc)})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes fail the unpickler in any way
        reason = _reason(exc)
        raise CheckpointError(f"{p}: not a siamnet checkpoint (unreadable: {reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a siamnet checkpoint (no '{FORMAT}' marker)")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {payload.get('format_version')} is newer than this siamnet "
            f"understands ({FORMAT_VERSION}); upgrade siamnet"
        )
    for key in ("metadata", "model"):
        if key not in payload:
            raise CheckpointError(f"{p}: damaged siamnet checkpoint, '{key}' is missing")
    try:
        payload["metadata"] = json.loads(payload["metadata"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: damaged siamnet checkpoint, metadata is not JSON") from exc
    if "model_spec" not in payload["metadata"]:
        raise CheckpointError(f"{p}: damaged siamnet checkpoint, no model description")
    return payload


def load_checkpoint(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    model: SiameseNet | None = None,
) -> Checkpoint:
    """Load a checkpoint (file or run folder) onto `device`; the model is in eval mode.

    Pass `model` to load weights into a network you built yourself (a custom backbone).
    """
    p = resolve_checkpoint_path(path)
    payload = read_checkpoint_payload(p)
    meta = payload["metadata"]
    net = model if model is not None else build_model(ModelSpec.from_dict(meta["model_spec"]))
    try:
        net.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{p}: weights do not fit the model it describes: {exc}"[:300]
        ) from exc
    net.to(device).eval()
    return Checkpoint(model=net, metadata=meta, training=payload.get("training"), path=p)


def update_metadata(path: str | os.PathLike[str], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge `updates` into a checkpoint's metadata, rewriting the file atomically."""
    p = resolve_checkpoint_path(path)
    payload = read_checkpoint_payload(p)
    payload["metadata"].update(updates)
    meta = payload["metadata"]
    payload["metadata"] = json.dumps(meta)
    with atomic_path(p) as tmp:
        torch.save(payload, tmp)
    return meta


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
