"""Sharing a model: plain weights and a JSON description that other tools read and that load
with no pickle at all, and the Hugging Face Hub round trip.

A shared model is a folder of

- ``model.safetensors``: the model's ``state_dict`` in the safetensors format (a JSON header
  and raw tensor bytes: reading it runs no code);
- ``config.json``: ``format`` (``"siamnet-pretrained"``), ``format_version``, the sha256 of
  ``model.safetensors``, and the checkpoint's metadata as its other fields: ``model_spec``
  (backbone, input channels and size, normalisation, head), ``threshold``, ``threshold_source``,
  ``default_threshold``, ``classes``, ``unseen_classes``, ``siamnet_version`` and, where the
  checkpoint has them, the training arguments and its final figures;
- ``README.md``: a short model card.

Every verb takes such a folder where it takes a run folder (`siamnet.checkpoint` recognises it
and reads it here); ``siamnet calibrate`` rewrites its ``config.json`` atomically. The folder is
written as a whole (a new folder beside it, swapped into place; other files already in it, such
as a clone's ``.git``, are kept), so an interrupted write leaves the old one as it was.
`save_pretrained` and ``siamnet export --format safetensors`` write the same folder;
`from_pretrained` reads a local folder, or one downloaded from the Hub with ``huggingface_hub``
(the ``hub`` extra); `push_to_hub` uploads one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.checkpoint import Checkpoint, check_metadata, load_checkpoint
from siamnet.errors import ArgumentError, CheckpointError, SiamnetError
from siamnet.fileio import atomic_folder, atomic_write_text, write_file
from siamnet.outpaths import check_output_dir
from siamnet.schema import Rules, check_companion_sha256, check_fields, is_int, is_str
from siamnet.temps import is_temp_name, remove_stale_temps

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT = "siamnet-pretrained"
FORMAT_VERSION = 1

#: The fields of ``config.json`` that describe the files rather than the model.
CONFIG_FIELDS: Rules = {
    "format_version": (
        f"a whole number from 1 to {FORMAT_VERSION}",
        lambda v: is_int(v) and v >= 1,
    ),
    "weights_sha256": (
        "the sha256 of model.safetensors (64 hex digits)",
        lambda v: is_str(v) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
    ),
}
_FILE_FIELDS = ("format", *CONFIG_FIELDS)

#: What a download from the Hub fetches: nothing else in the repository is read.
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE]


@dataclass
class SharedModel:
    """The folder written by `save_pretrained` and what is in it."""

    folder: str
    weights_file: str
    config_file: str
    card_file: str
    tensors: int
    parameters: int
    weights_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"format": "safetensors", **asdict(self)}


# --- recognising and reading a shared model --------------------------------------------------


def shared_folder(path: str | os.PathLike[str]) -> Path | None:
    """The shared-model folder that `path` names: a folder holding ``config.json`` or
    ``model.safetensors``, or either file itself; None for anything else."""
    p = Path(path)
    if p.is_dir():
        return p if (p / CONFIG_FILE).exists() or (p / WEIGHTS_FILE).exists() else None
    if p.is_file() and p.name in (CONFIG_FILE, WEIGHTS_FILE):
        return p.parent
    return None


def read_shared_payload(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A shared-model folder as `siamnet.checkpoint.read_checkpoint_payload` returns a
    checkpoint: ``format_version``, ``metadata`` (validated field by field) and ``model`` (the
    state_dict). Reads JSON and safetensors only; never unpickles anything."""
    d = Path(folder)
    config = read_config(d)
    weights = d / WEIGHTS_FILE
    try:
        raw = weights.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{d}: incomplete shared model: {WEIGHTS_FILE} is missing beside {CONFIG_FILE}"
        ) from exc
    recorded = config.get("weights_sha256")
    check_companion_sha256(weights, raw, recorded, CONFIG_FILE, "export the model again")
    return {
        "format_version": config["format_version"],
        "metadata": metadata_of(config),
        "model": _load_weights(weights, raw),
    }


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a shared-model folder, validated field by field."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{folder}: incomplete shared model: {CONFIG_FILE} is missing beside {WEIGHTS_FILE}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not a siamnet model description (not text)") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: not a siamnet model description (not JSON: {exc.msg} at character {exc.pos})"
        ) from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a siamnet model description (no '{FORMAT}' format)")
    check_fields(path, config, CONFIG_FIELDS, required=("format_version",))
    if config["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {config['format_version']} is newer than this siamnet understands "
            f"({FORMAT_VERSION}); upgrade siamnet"
        )
    try:
        check_metadata(path, metadata_of(config))
    except CheckpointError as exc:  # its fields are at the top level here
        raise CheckpointError(str(exc).replace(": field metadata.", ": field ", 1)) from exc
    return config


def metadata_of(config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint metadata held in a ``config.json``: every field but the file fields."""
    return {k: v for k, v in config.items() if k not in _FILE_FIELDS}


def _load_weights(path: Path, raw: bytes) -> dict[str, torch.Tensor]:
    safetensors_torch = require_safetensors()
    try:
        return dict(safetensors_torch.load(raw))
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail the reader in several ways
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CheckpointError(f"{path}: not a safetensors file (unreadable: {reason})") from exc


def update_shared_config(folder: str | os.PathLike[str], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge `updates` into the metadata of a shared model's ``config.json``, rewritten
    atomically; the weights are not touched. Returns the new metadata."""
    d = Path(folder)
    path = d / CONFIG_FILE
    if path.is_symlink():
        raise CheckpointError(
            f"{path}: a symbolic link (a model in the Hugging Face cache?); write a copy with "
            "save_pretrained and change that"
        )
    config = read_config(d)
    config.update(updates)
    meta = metadata_of(config)
    check_metadata(path, meta)
    atomic_write_text(path, config_text(config))
    return meta


# --- writing ---------------------------------------------------------------------------------


def save_pretrained(
    source: Checkpoint | str | os.PathLike[str],
    folder: str | os.PathLike[str],
    overwrite: bool = False,
) -> SharedModel:
    """Write checkpoint `source` (loaded, or a run folder or file) to `folder` as a shared
    model: ``model.safetensors``, ``config.json`` and a ``README.md`` model card.

    An existing folder with files in it is refused unless `overwrite`; then the model's files
    are replaced and any others kept.

    >>> import siamnet
    >>> siamnet.save_pretrained("runs/digits", "shared/digits")
    >>> model = siamnet.from_pretrained("shared/digits")    # what every verb also accepts
    """
    return write_shared(source, folder, overwrite, "folder")


def write_shared(
    source: Checkpoint | str | os.PathLike[str],
    folder: str | os.PathLike[str],
    overwrite: bool,
    flag: str,
) -> SharedModel:
    """`save_pretrained`, with errors about the output naming `flag` (``--out``)."""
    require_safetensors()
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    out = check_output_dir(folder, flag)
    _refuse_output(out, ckpt, overwrite, flag)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt.model.state_dict().items()}
    weights = _weights_bytes(state, out / WEIGHTS_FILE)
    digest = hashlib.sha256(weights).hexdigest()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_sha256": digest,
        **metadata_of(ckpt.metadata),
    }
    config.setdefault("siamnet_version", __version__)
    check_metadata(out / CONFIG_FILE, metadata_of(config))
    parameters = sum(t.numel() for t in ckpt.model.parameters())
    card = model_card(metadata_of(config), parameters, out.name)
    remove_stale_temps(out.parent)
    with atomic_folder(out, keep_others=True) as tmp:
        write_file(tmp / WEIGHTS_FILE, weights, shown_as=out / WEIGHTS_FILE)
        text = config_text(config)
        write_file(tmp / CONFIG_FILE, text.encode("utf-8"), shown_as=out / CONFIG_FILE)
        write_file(tmp / CARD_FILE, card.encode("utf-8"), shown_as=out / CARD_FILE)
    return SharedModel(
        folder=str(out),
        weights_file=str(out / WEIGHTS_FILE),
        config_file=str(out / CONFIG_FILE),
        card_file=str(out / CARD_FILE),
        tensors=len(state),
        parameters=parameters,
        weights_sha256=digest,
    )


def config_text(config: dict[str, Any]) -> str:
    """``config.json`` as strict JSON, which any tool reads: a figure that is not a finite
    number (a NaN AUC) is written as null."""
    return json.dumps(_finite(config), indent=1, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _refuse_output(out: Path, ckpt: Checkpoint, overwrite: bool, flag: str) -> None:
    """Refuse a folder that holds the checkpoint being exported, or that has files in it
    (without `overwrite`)."""
    if out.is_dir():
        source = ckpt.path.resolve()
        target = out.resolve()
        if source == target or target in source.parents:
            raise ArgumentError(
                f"{flag} {out}: holds {ckpt.path}, the checkpoint being exported; choose "
                "another folder"
            )
        run_files = [n for n in ("best.pt", "last.pt") if (out / n).exists()]
        if run_files:
            raise ArgumentError(
                f"{flag} {out}: a run folder ({run_files[0]} is in it, and would be loaded "
                "instead of the shared model); choose another folder"
            )
        entries = [e for e in out.iterdir() if not is_temp_name(e.name)]
        if entries and not overwrite:
            again = "pass --overwrite" if flag.startswith("--") else "pass overwrite=True"
            raise ArgumentError(f"{flag} {out}: already exists; {again}")


def _weights_bytes(state: dict[str, torch.Tensor], shown: Path) -> bytes:
    """`state` in the safetensors format, after checking that it reads back the same."""
    safetensors_torch = require_safetensors()
    data = safetensors_torch.save(state, metadata={"format": "pt"})
    back = safetensors_torch.load(data)
    for name, tensor in state.items():
        got = back.get(name)
        if got is None or not _same_bytes(got, tensor):
            raise SiamnetError(
                f"{shown}: {name} does not read back as written; nothing was written"
            )
    return data


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same dtype, shape and bytes (NaN weights included, which `torch.equal` refuses)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


#: How a model's image files are brought to its input size, in words (the model card).
GEOMETRY = {
    "crop": "shorter side resized, the centre cropped to the input's aspect",
    "stretch": "resized to the input size (aspect not kept)",
}
#: Test-time centring, in words (the model card).
CENTRING = {
    "on": "on: embeddings minus the mean training embedding, scaled to unit length",
    "off": "off (the mean training embedding is stored; `evaluate --centring on` measures it)",
    "none": "none (no mean training embedding stored)",
}


def model_card(meta: dict[str, Any], parameters: int, name: str) -> str:
    """A short ``README.md`` for a shared model: what it is, how to use it, its figures."""
    spec = meta["model_spec"]
    height, width = spec["image_size"]
    channels = "greyscale" if spec["in_channels"] == 1 else "RGB"
    threshold = meta.get("threshold")
    shown_threshold = "none (calibrate it first)" if threshold is None else f"{threshold:.6g}"
    version = meta.get("siamnet_version")
    trained_with = f"siamnet {version}" if version else "siamnet"
    lines = [
        "---",
        "library_name: siamnet",
        "tags:",
        "- siamese-network",
        "- one-shot-learning",
        "- image-similarity",
        "- safetensors",
        "---",
        "",
        f"# {name or 'siamnet model'}",
        "",
        f"A Siamese network for one-shot image recognition, trained with {trained_with}.",
        "",
        "| | |",
        "|---|---|",
        f"| backbone | `{spec['model']}` ({parameters:,} parameters) |",
        f"| input | {channels} {height}×{width}, raw pixel values 0..255 |",
        f"| image files | {GEOMETRY[spec.get('resize', 'stretch')]} |",
        f"| head | `{spec.get('head', 'euclidean')}` |",
        f"| test-time centring | {CENTRING[spec.get('centring', 'none')]} |",
        f"| trained with | `{spec['loss']}` loss |",
        f"| threshold | {shown_threshold} (`threshold` in config.json; 'same' when the score "
        "is at least this) |",
    ]
    classes = meta.get("classes") or []
    if classes:
        lines.append(f"| training classes | {len(classes)} |")
    figures = _figures(meta.get("final"))
    if figures:
        lines += ["", "## Figures at the end of training", "", "| | |", "|---|---|", *figures]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import siamnet",
        "",
        'model = siamnet.from_pretrained("OWNER/NAME")  # or this folder',
        "result = siamnet.compare(model, image_a, image_b)  # uint8 [C, H, W] each",
        "```",
        "",
        "Every siamnet command takes this folder where it takes a run folder:",
        "",
        "```",
        "siamnet compare FOLDER a.png b.png",
        "siamnet classify FOLDER --support support/ --query q.png",
        "siamnet serve FOLDER",
        "```",
        "",
        f"`{WEIGHTS_FILE}` holds the weights (safetensors), `{CONFIG_FILE}` the model's "
        "description (backbone, input size, normalisation, head, threshold, classes).",
        "",
    ]
    return "\n".join(lines)


def _figures(final: Any) -> list[str]:
    """Table rows of the figures a checkpoint's ``final`` summary holds."""
    if not isinstance(final, dict):
        return []
    rows = []

    def row(label: str, value: Any, percent: bool = True) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            rows.append(
                f"| {label} | {100 * value:.1f}% |" if percent else f"| {label} | {value:.3f} |"
            )

    for key, label in (("oneshot", "unseen classes"), ("test_oneshot", "test split")):
        shot = final.get(key)
        if isinstance(shot, dict) and "ways" in shot:
            row(f"{shot['ways']}-way one-shot accuracy, {label}", shot.get("accuracy"))
    row("pair accuracy, unseen classes", final.get("unseen_pair_acc"))
    row("false accept rate, unseen classes", final.get("unseen_far"))
    row("false reject rate, unseen classes", final.get("unseen_frr"))
    row("pair accuracy, test split", final.get("test_pair_acc"))
    row("ROC AUC, test split", final.get("test_auc"), percent=False)
    return rows


# --- the Hugging Face Hub --------------------------------------------------------------------


def from_pretrained(
    repo_or_folder: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> Checkpoint:
    """A model from a local folder (a shared model, or any checkpoint or run folder) or, when
    no such path exists, from the Hugging Face Hub repository `repo_or_folder`
    (``owner/name``), downloaded into the Hub's cache (`cache_dir`) with ``huggingface_hub``.

    >>> model = siamnet.from_pretrained("owner/digits-siamese")
    """
    local = Path(os.path.expanduser(os.fspath(repo_or_folder)))
    if local.exists():
        return load_checkpoint(local, device)
    folder = download(os.fspath(repo_or_folder), revision, cache_dir, token)
    return load_checkpoint(folder, device)


def download(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> Path:
    """The local folder of Hub repository `repo_id` (only its model files), downloaded or
    found in the cache; `CheckpointError` in one line when it cannot be had."""
    hub = require_hub(f"{repo_id}: no such folder; loading it from the Hugging Face Hub")
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            allow_patterns=HUB_FILES,
            library_name="siamnet",
            library_version=__version__,
        )
    except Exception as exc:  # noqa: BLE001 - the Hub and the network fail in many ways
        raise CheckpointError(_hub_failure(repo_id, revision, exc)) from exc
    return Path(folder)


def _hub_failure(repo_id: str, revision: str | None, exc: BaseException) -> str:
    kind = type(exc).__name__
    at = f" at revision {revision}" if revision else ""
    if kind == "HFValidationError":
        return f"{repo_id}: no such folder, and not a Hugging Face Hub model id (owner/name)"
    if kind == "RepositoryNotFoundError":
        return (
            f"{repo_id}: no such folder, and no such model on the Hugging Face Hub (or it is "
            "private: log in with 'hf auth login' or pass token=...)"
        )
    if kind == "RevisionNotFoundError":
        return f"{repo_id}: the Hugging Face Hub model has no revision {revision}"
    if kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return (
            f"{repo_id}: no such folder, and the Hugging Face Hub model{at} is not in the local "
            "cache while the Hub cannot be reached (HF_HUB_OFFLINE is set, or no network)"
        )
    reason = " ".join(str(exc).split())[:200] or kind
    return f"{repo_id}: cannot download from the Hugging Face Hub{at} ({reason})"


def push_to_hub(
    source: Checkpoint | str | os.PathLike[str],
    repo_id: str,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload siamnet model",
) -> str:
    """Upload checkpoint `source` to Hub repository `repo_id` (created if missing) as the
    folder `save_pretrained` writes; returns the URL of the commit."""
    hub = require_hub("uploading to the Hugging Face Hub")
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    with tempfile.TemporaryDirectory(prefix="siamnet-upload-") as tmp:
        folder = Path(tmp) / repo_id.rsplit("/", 1)[-1]
        write_shared(ckpt, folder, False, "folder")
        api = hub.HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=commit_message,
                allow_patterns=HUB_FILES,
            )
        except Exception as exc:  # noqa: BLE001 - the Hub and the network fail in many ways
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise SiamnetError(
                f"{repo_id}: cannot upload to the Hugging Face Hub ({reason})"
            ) from exc
    return str(getattr(info, "commit_url", info))


# --- optional packages -----------------------------------------------------------------------


def require_safetensors() -> Any:
    """``safetensors.torch``; one clear line if the package is missing."""
    try:
        import safetensors.torch
    except ImportError as exc:
        raise ArgumentError(
            "the safetensors format needs the safetensors package (not installed): "
            "pip install safetensors"
        ) from exc
    return safetensors.torch


def require_hub(doing: str) -> Any:
    """``huggingface_hub``; one clear line saying what needed it if it is missing."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ArgumentError(
            f"{doing} needs huggingface_hub (not installed): pip install 'siamnet[hub]'"
        ) from exc
    return huggingface_hub
