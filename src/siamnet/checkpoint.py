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

Every write goes to a temporary file in the same folder and is renamed into place. Loading
validates the whole layout once (`PAYLOAD_FIELDS`, `METADATA_FIELDS`, `MODEL_SPEC_FIELDS`):
a field of the wrong type is refused with one line naming the file, the field, what was
expected and what was found (the checker is `siamnet.schema`).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.errors import ArgumentError, CheckpointError
from siamnet.fileio import save_torch
from siamnet.images import RESIZE_MODES
from siamnet.models.backbones import BACKBONES, is_backbone_name
from siamnet.models.heads import HEADS
from siamnet.models.siamese import (
    CENTRING_STATES,
    ModelSpec,
    SiameseNet,
    build_model,
    unwrap,
)
from siamnet.schema import (
    Rules,
    check_fields,
    describe,
    is_bool,
    is_dict,
    is_int,
    is_number,
    is_str,
    list_of,
    or_none,
)

FORMAT = "siamnet-checkpoint"
FORMAT_VERSION = 1


#: The largest input side a checkpoint may describe.
MAX_IMAGE_SIDE = 4096


def _is_image_size(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(is_int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in value)
    )


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _is_class_name(value: Any) -> bool:
    return is_str(value) or is_int(value)


PAYLOAD_FIELDS: Rules = {
    "format_version": (
        f"a whole number from 1 to {FORMAT_VERSION}",
        lambda v: is_int(v) and v >= 1,
    ),
    "metadata": ("a JSON object written as a string", is_str),
    "model": ("a state_dict (parameter names mapped to tensors)", _is_state_dict),
    "training": ("an object holding the training state", or_none(is_dict)),
}


def _is_default_threshold(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and is_number(value[0]) and is_str(value[1])


METADATA_FIELDS: Rules = {
    "model_spec": ("an object describing the model", is_dict),
    "threshold": ("a number or null", or_none(is_number)),
    "threshold_source": ("a string or null", or_none(is_str)),
    "default_threshold": ("[threshold, meaning] or null", or_none(_is_default_threshold)),
    "classes": ("a list of class names or null", or_none(list_of(_is_class_name))),
    "unseen_classes": ("a list of class names or null", or_none(list_of(_is_class_name))),
    "siamnet_version": ("a string", is_str),
    "training_args": ("an object", is_dict),
    "calibration": ("an object", is_dict),
    "final": ("an object", is_dict),
    "val_protocol": ("a string or null", or_none(is_str)),
}
MODEL_SPEC_FIELDS: Rules = {
    "model": ("the name of a backbone", lambda v: is_str(v) and bool(v)),
    "loss": ("the name of the objective it was trained with", lambda v: is_str(v) and bool(v)),
    "in_channels": ("1 or 3 (image channels)", lambda v: is_int(v) and v in (1, 3)),
    "image_size": (
        f"[height, width], two whole numbers from 1 to {MAX_IMAGE_SIDE}",
        _is_image_size,
    ),
    "head": (f"one of {', '.join(HEADS)}", lambda v: is_str(v) and v in HEADS),
    "normalization": ("an object with scale, mean and std", is_dict),
    "embedding_norm": ("true or false", is_bool),
    "learned_temperature": ("true or false", is_bool),
    "resize": (
        f"one of {', '.join(RESIZE_MODES)} (how image files are brought to image_size)",
        lambda v: is_str(v) and v in RESIZE_MODES,
    ),
    "centring": (
        f"one of {', '.join(CENTRING_STATES)} (test-time centring on the mean training embedding)",
        lambda v: is_str(v) and v in CENTRING_STATES,
    ),
}
NORMALIZATION_FIELDS: Rules = {
    "scale": ("a positive number", lambda v: is_number(v) and v > 0),
    "mean": ("a list of numbers, one per channel", lambda v: bool(v) and list_of(is_number)(v)),
    "std": (
        "a list of positive numbers, one per channel",
        lambda v: bool(v) and list_of(lambda x: is_number(x) and x > 0)(v),
    ),
}


def _is_fraction(value: Any) -> bool:
    return is_number(value) and 0 <= value < 1


#: The training arguments read outside training (by evaluate and calibrate, to rebuild the
#: validation split); the others are checked by ``--resume``.
TRAINING_ARGS_FIELDS: Rules = {
    "data": ("a data spec (a string) or null", or_none(is_str)),
    "test_data": ("a data spec (a string) or null", or_none(is_str)),
    "eval_classes": ("a list of class names or null", or_none(list_of(_is_class_name))),
    "eval_fraction": ("a number from 0 to 1, or null", or_none(_is_fraction)),
    "val_fraction": ("a number from 0 to 1", _is_fraction),
    "val_classes_fraction": ("a number from 0 to 1, or null", or_none(_is_fraction)),
    "seed": ("a whole number or null", or_none(is_int)),
    "loss": ("a string or null", or_none(is_str)),
    "margin": ("a number or null", or_none(is_number)),
    "image_size": (
        f"[height, width], two whole numbers from 1 to {MAX_IMAGE_SIDE}, or null",
        or_none(_is_image_size),
    ),
}


def check_metadata(where: str | os.PathLike[str], meta: Any) -> None:
    """Raise `CheckpointError` unless `meta` is a checkpoint's metadata object as siamnet
    writes it (a model description that `build_model` can use, and well-typed extras)."""
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{where}: field metadata: expected a JSON object, found {describe(meta)}"
        )
    check_fields(where, meta, METADATA_FIELDS, required=("model_spec",), prefix="metadata.")
    if "training_args" in meta:
        args_prefix = "metadata.training_args."
        check_fields(where, meta["training_args"], TRAINING_ARGS_FIELDS, prefix=args_prefix)
    spec = meta["model_spec"]
    prefix = "metadata.model_spec."
    required = ("model", "loss", "in_channels", "image_size")
    check_fields(where, spec, MODEL_SPEC_FIELDS, required, prefix, only_known=True)
    if "normalization" in spec:
        norm = spec["normalization"]
        check_fields(
            where,
            norm,
            NORMALIZATION_FIELDS,
            tuple(NORMALIZATION_FIELDS),
            prefix + "normalization.",
        )
        channels = spec["in_channels"]
        for name in ("mean", "std"):
            if len(norm[name]) not in (1, channels):
                count = "1 value" if channels == 1 else f"1 or {channels} values"
                raise CheckpointError(
                    f"{where}: field {prefix}normalization.{name}: expected {count} (in_channels "
                    f"is {channels}), found {describe(norm[name])}"
                )


# --- checkpoints -----------------------------------------------------------------------------


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
        """The calibrated threshold; `CheckpointError` if the checkpoint has none."""
        value = self.metadata.get("threshold")
        if value is None:
            raise CheckpointError(f"{self.path}: no calibrated threshold in this checkpoint")
        return float(value)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: SiameseNet,
    metadata: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> None:
    """Write `model`'s weights, `metadata` and optional `training` state to `path` atomically.

    A full disk is one line, ``no space left writing PATH``, and leaves any old file intact.
    """
    meta = dict(metadata)
    meta.setdefault("siamnet_version", __version__)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": json.dumps(meta),
        "model": state,
    }
    if training is not None:
        payload["training"] = training
    save_torch(path, payload)


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, a run folder (its ``best.pt``, else ``last.pt``), or the folder of
    a shared model (``config.json`` and ``model.safetensors``, `siamnet.sharing`)."""
    from siamnet.sharing import shared_folder

    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
    shared = shared_folder(p)
    if shared is not None:
        return shared
    if p.is_dir():
        raise CheckpointError(
            f"{p}: a folder with no best.pt or last.pt in it (a run), nor config.json and "
            "model.safetensors (a shared model)"
        )
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
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _refusal(path: Path, exc: BaseException) -> str:
    """Why a file the weights-only reader stopped at was refused, as one whole sentence."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        what = f"a Python object ({found.group(1)}) besides plain weights"
    else:
        detail = _reason(exc).rstrip(".")
        what = f"more than plain weights (the weights-only reader stopped at: {detail})"
    return (
        f"{path}: refused to load: it holds {what}, and loading that could run code; "
        "siamnet only loads checkpoints of plain weights."
    )


def _check_archive(path: Path) -> None:
    """Refuse a checkpoint archive (the zip file `torch.save` writes) whose members do not
    match the CRC-32 recorded for each when it was written: bytes changed on disk."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return  # not an archive: torch.load says what it is
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails zipfile in many ways
        raise CheckpointError(
            f"{path}: not a siamnet checkpoint (unreadable: {_reason(exc)})"
        ) from exc
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: {bad} does not match the checksum recorded when it "
            "was written (the file changed on disk); use another copy"
        )


def read_checkpoint_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload dict of a checkpoint, validated; never executes code from the file."""
    p = resolve_checkpoint_path(path)
    if p.is_dir():  # a shared model: JSON and safetensors, no pickle
        from siamnet.sharing import read_shared_payload

        return read_shared_payload(p)
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file, not a siamnet checkpoint")
    _check_archive(p)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of odd files
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_refusal(p, exc)) from exc
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes fail the unpickler in any way
        reason = _reason(exc)
        raise CheckpointError(f"{p}: not a siamnet checkpoint (unreadable: {reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a siamnet checkpoint (no '{FORMAT}' marker)")
    check_fields(p, payload, PAYLOAD_FIELDS, required=("format_version", "metadata", "model"))
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {payload['format_version']} is newer than this siamnet "
            f"understands ({FORMAT_VERSION}); upgrade siamnet"
        )
    try:
        payload["metadata"] = json.loads(payload["metadata"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{p}: field metadata: expected a JSON object written as a string, found text that "
            f"is not JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    check_metadata(p, payload["metadata"])
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
    net = model if model is not None else _build(p, meta["model_spec"])
    mismatch = state_mismatch(net.state_dict(), payload["model"])
    if mismatch:
        raise CheckpointError(f"{p}: weights do not fit the model it describes: {mismatch}")
    if model is None:
        net = net.to_empty(device="cpu")  # built without memory, now that the weights fit
    net.load_state_dict(payload["model"])
    net.to(device).eval()
    return Checkpoint(model=net, metadata=meta, training=payload.get("training"), path=p)


def _build(path: Path, spec: dict[str, Any]) -> SiameseNet:
    """The model that a validated model_spec describes, on the ``meta`` device (shapes only,
    no memory, so a spec that does not fit its weights costs nothing); a spec it cannot be
    built from (an input too small for the backbone, a missing optional package) names the
    file."""
    if not is_backbone_name(spec["model"]):
        raise CheckpointError(
            f"{path}: field metadata.model_spec.model: expected one of {', '.join(BACKBONES)} "
            f"or a timm:NAME or package.module:Class name, found {describe(spec['model'])}"
        )
    try:
        with torch.device("meta"):
            return build_model(ModelSpec.from_dict(spec))
    except (ArgumentError, CheckpointError) as exc:
        raise CheckpointError(
            f"{path}: field metadata.model_spec: cannot build the {spec.get('model')!r} model it "
            f"describes: {exc}"
        ) from exc


def state_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """'' when `found` has every tensor of `expected` with the same shape and nothing else;
    otherwise a short summary: missing, unexpected and reshaped names, one example of each."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} not in the model (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape (e.g. {k}: {list(found[k].shape)} in the file, "
            f"{list(expected[k].shape)} in the model)"
        )
    return "; ".join(parts)


def update_metadata(path: str | os.PathLike[str], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge `updates` into a checkpoint's metadata, rewriting the file atomically."""
    p = resolve_checkpoint_path(path)
    if p.is_dir():  # a shared model: its config.json is rewritten
        from siamnet.sharing import update_shared_config

        return update_shared_config(p, updates)
    payload = read_checkpoint_payload(p)
    payload["metadata"].update(updates)
    meta = payload["metadata"]
    check_metadata(p, meta)
    payload["metadata"] = json.dumps(meta)
    save_torch(p, payload)
    return meta
