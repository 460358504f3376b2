"""A gallery on disk: embeddings of many images, made once, searched for the items nearest a query.

On disk a gallery is a folder with

- ``embeddings.pt``: ``{"embeddings": float32 [N, D]}`` written by `torch.save` with tensors
  only, read back with ``weights_only=True`` (nothing in it can run code);
- ``gallery.json``: format marker, item count, label (or null) and file name of each item, the
  head kind, the embedding size, the identity of the checkpoint that made it (a sha256 of its
  model description and weights), so that adding to it or searching it with another model is
  refused, and the sha256 of ``embeddings.pt``.

A gallery is written whole: both files go into a new folder beside it
(``.NAME.siamnet-PID-XXXXXXXX.new``) that then replaces the old folder in one step
(`siamnet.fileio.atomic_folder`), so a build, an ``--overwrite`` or an add that is killed
leaves the old gallery or the new one, never a mix. Loading checks the recorded sha256 and the
recorded count and size against ``embeddings.pt``, so two files that do not belong together
are refused; where the system has no one-step exchange and a replacement was cut between its
two renames, loading puts the previous gallery back. Adding items embeds only the new images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.checkpoint import Checkpoint
from siamnet.errors import CheckpointError, DataError
from siamnet.fileio import atomic_folder, torch_bytes, write_file
from siamnet.infer import model_of
from siamnet.models.embed import embed_images
from siamnet.models.heads import HEADS
from siamnet.models.siamese import SiameseNet
from siamnet.schema import (
    Rules,
    check_companion_sha256,
    check_fields,
    describe,
    is_dict,
    is_int,
    is_positive_int,
    is_sha256,
    is_str,
    list_of,
    or_none,
)
from siamnet.temps import TEMP_MARK, remove_stale_temps, restore_interrupted_swap, temp_entries

FORMAT = "siamnet-gallery"


FORMAT_VERSION = 1


EMBEDDINGS_FILE = "embeddings.pt"


INFO_FILE = "gallery.json"


_log = logging.getLogger("siamnet")


GALLERY_FIELDS: Rules = {
    "format_version": (
        f"a whole number from 1 to {FORMAT_VERSION}",
        lambda v: is_int(v) and v >= 1,
    ),
    "siamnet_version": ("a string", is_str),
    "count": ("a whole number, 0 or more", lambda v: is_int(v) and v >= 0),
    "dim": ("a positive whole number", is_positive_int),
    "head": (f"one of {', '.join(HEADS)}", lambda v: is_str(v) and v in HEADS),
    "checkpoint": ("an object naming the checkpoint that made the gallery", is_dict),
    "labels": ("a list of labels (strings or null), one per item", list_of(or_none(is_str))),
    "files": ("a list of file names (strings), one per item", list_of(is_str)),
    "embeddings_sha256": (f"the sha256 of {EMBEDDINGS_FILE} (64 hex digits)", is_sha256),
}


CHECKPOINT_RECORD_FIELDS: Rules = {
    "sha256": ("the checkpoint's sha256 (64 hex digits)", is_sha256),
    "path": ("a file path (a string)", is_str),
    "model_spec": ("an object describing the model", is_dict),
}


def checkpoint_identity(source: Checkpoint | SiameseNet) -> str:
    """sha256 (hex) of a model's description and weights, whatever else its file holds.

    Two checkpoints with the same weights (a copy, or one whose threshold was recalibrated)
    have the same identity; any change of a weight changes it.
    """
    digest = hashlib.sha256()
    if isinstance(source, Checkpoint):
        digest.update(json.dumps(source.metadata["model_spec"], sort_keys=True).encode())
    state = model_of(source).state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _checkpoint_record(source: Checkpoint | SiameseNet) -> dict[str, Any]:
    record: dict[str, Any] = {"sha256": checkpoint_identity(source)}
    if isinstance(source, Checkpoint):
        record["path"] = str(source.path.resolve())
        record["model_spec"] = source.metadata["model_spec"]
    return record


@dataclass
class Gallery:
    """Embeddings ``[N, D]`` with a label (or None) and a file name per item."""

    embeddings: torch.Tensor
    labels: list[str | None]
    files: list[str]
    head: str
    checkpoint: dict[str, Any]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint the gallery was made with, as recorded."""
        p = self.checkpoint.get("path")
        return Path(p) if p else None

    def check_model(self, source: Checkpoint | SiameseNet) -> None:
        """Raise `CheckpointError` unless `source` is the model that made this gallery."""
        theirs = checkpoint_identity(source)
        if theirs != self.checkpoint["sha256"]:
            where = self.path or "gallery"
            mine = f"{self.checkpoint.get('path', '?')} (sha256 {self.checkpoint['sha256'][:12]})"
            given = source.path if isinstance(source, Checkpoint) else "the given model"
            raise CheckpointError(
                f"{where}: made with checkpoint {mine}, not with {given} (sha256 {theirs[:12]}); "
                "embeddings of different models cannot be mixed or compared: build a new gallery"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "siamnet_version": __version__,
            "count": len(self),
            "dim": self.dim,
            "head": self.head,
            "checkpoint": self.checkpoint,
            "labels": self.labels,
            "files": self.files,
            **self.extra,
        }


def build_gallery(
    source: Checkpoint | SiameseNet,
    images: torch.Tensor,
    labels: Sequence[str | None],
    names: Sequence[str],
    out: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> Gallery:
    """Embed uint8 images ``[N, C, H, W]`` once into a new gallery, written to `out` if given.

    An existing gallery at `out` is refused unless `overwrite`.
    """
    model = model_of(source)
    _check_items(images, labels, names)
    if len(images) == 0:
        raise DataError(f"{out or 'gallery'}: no images to put in the gallery")
    if out is not None:
        refuse_existing_gallery(Path(out), overwrite)
    embeddings = embed_images(model, images, batch_size=batch_size).float().cpu()
    gallery = Gallery(
        embeddings=embeddings,
        labels=list(labels),
        files=[str(n) for n in names],
        head=model.head.kind,
        checkpoint=_checkpoint_record(source),
    )
    if out is not None:
        save_gallery(gallery, out)
    return gallery


def add_to_gallery(
    gallery: Gallery | str | os.PathLike[str],
    source: Checkpoint | SiameseNet,
    images: torch.Tensor,
    labels: Sequence[str | None],
    names: Sequence[str],
    batch_size: int | None = None,
) -> Gallery:
    """Embed only the new images ``[M, C, H, W]`` and append them; a gallery loaded from (or
    given as) a folder is rewritten there. A different checkpoint is refused."""
    g = gallery if isinstance(gallery, Gallery) else load_gallery(gallery)
    g.check_model(source)
    _check_items(images, labels, names)
    new = embed_images(model_of(source), images, batch_size=batch_size).float().cpu()
    if len(images) and new.shape[1] != g.dim:
        raise CheckpointError(
            f"{g.path}: embeddings of size {g.dim}, the model gives {new.shape[1]}"
        )
    merged = Gallery(
        embeddings=torch.cat([g.embeddings.cpu(), new]) if len(images) else g.embeddings,
        labels=g.labels + list(labels),
        files=g.files + [str(n) for n in names],
        head=g.head,
        checkpoint=g.checkpoint,
        path=g.path,
        extra=g.extra,
    )
    if g.path is not None:
        save_gallery(merged, g.path)
    return merged


def save_gallery(gallery: Gallery, folder: str | os.PathLike[str]) -> None:
    """Write `gallery` into `folder` as a whole: a new folder beside it, swapped into place.

    Other files in an existing gallery folder are kept. A full disk is one line, ``no space
    left writing FILE``, and leaves the old gallery as it was.
    """
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise DataError(f"{d}: expected a gallery folder, found a file")
    remove_stale_temps(d.parent)
    data = torch_bytes({"embeddings": gallery.embeddings.detach().float().cpu().contiguous()})
    info = {**gallery.to_json(), "embeddings_sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(info, indent=1) + "\n"
    with atomic_folder(d, keep_others=True) as tmp:
        write_file(tmp / EMBEDDINGS_FILE, data, shown_as=d / EMBEDDINGS_FILE)
        write_file(tmp / INFO_FILE, text.encode("utf-8"), shown_as=d / INFO_FILE)
    gallery.path = d


def _put_back_interrupted(d: Path) -> None:
    """Where gallery folder `d` is missing because a replacement was cut short, put the
    previous gallery back (saying so on stderr)."""
    if os.path.lexists(d):
        return
    restored = restore_interrupted_swap(d)
    if restored is not None:
        _log.warning(
            "siamnet: note: %s: put back the previous gallery from %s, left there by a "
            "replacement that was interrupted",
            d,
            restored.name,
        )


def load_gallery(folder: str | os.PathLike[str], device: torch.device | str = "cpu") -> Gallery:
    """Read a gallery folder; never executes code from it. A gallery whose files do not match
    each other (sha256, count, size) or whose description has a field of the wrong type is
    refused with one line naming the file and the field."""
    d = Path(folder)
    _put_back_interrupted(d)
    info_file, emb_file = d / INFO_FILE, d / EMBEDDINGS_FILE
    if not d.is_dir():
        if not d.exists() and any(
            e.target == d and e.kind == "new" for e in temp_entries(d.parent)
        ):
            raise CheckpointError(
                f"{d}: missing: a build of this gallery was interrupted before it was complete "
                "(nothing was put in its place); run 'siamnet index build' again"
            )
        raise CheckpointError(
            f"{d}: not a gallery folder ({'a file' if d.exists() else 'missing'})"
        )
    if not info_file.is_file():
        raise CheckpointError(
            f"{d}: not a siamnet gallery (no {INFO_FILE}); make one with index build"
        )
    info = _read_info(info_file)
    count, dim = info["count"], info["dim"]
    try:
        raw = emb_file.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"{d}: damaged gallery, {EMBEDDINGS_FILE} is missing") from exc
    check_companion_sha256(
        emb_file,
        raw,
        info.get("embeddings_sha256"),
        INFO_FILE,
        "rebuild the gallery with 'siamnet index build --overwrite'",
    )
    embeddings = _read_embeddings(emb_file, raw)
    if embeddings.dtype != torch.float32 or list(embeddings.shape) != [count, dim]:
        raise CheckpointError(
            f"{emb_file}: expected a float32 tensor of shape [{count}, {dim}] ({INFO_FILE} "
            f"records {count} items of size {dim}), found {describe(embeddings)}; the two files "
            "do not belong together: rebuild the gallery with 'siamnet index build --overwrite'"
        )
    known = {"format", "format_version", "siamnet_version", "count", "dim", "head", "checkpoint"}
    known |= {"labels", "files", "embeddings_sha256"}
    return Gallery(
        embeddings=embeddings.to(device),
        labels=info["labels"],
        files=info["files"],
        head=info["head"],
        checkpoint=dict(info["checkpoint"]),
        path=d,
        extra={k: v for k, v in info.items() if k not in known},
    )


def _read_info(info_file: Path) -> dict[str, Any]:
    """``gallery.json``, validated field by field (`GALLERY_FIELDS`)."""
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{info_file}: damaged gallery description, not JSON ({exc})"
        ) from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{info_file}: not a siamnet gallery (no '{FORMAT}' marker)")
    required = ("format_version", "count", "dim", "head", "checkpoint", "labels", "files")
    check_fields(info_file, info, GALLERY_FIELDS, required)
    if info["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{info_file}: gallery format is newer than this siamnet; upgrade")
    check_fields(
        info_file, info["checkpoint"], CHECKPOINT_RECORD_FIELDS, ("sha256",), "checkpoint."
    )
    count = info["count"]
    for name in ("labels", "files"):
        if len(info[name]) != count:
            raise CheckpointError(
                f"{info_file}: field {name}: expected {count} entries (count is {count}), "
                f"found a list of {len(info[name])}"
            )
    return info


def _read_embeddings(emb_file: Path, raw: bytes) -> torch.Tensor:
    """The ``embeddings`` tensor of ``embeddings.pt`` (its bytes `raw`), weights only."""
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a damaged file
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise CheckpointError(f"{emb_file}: damaged gallery embeddings ({reason})") from exc
    embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
    if not isinstance(embeddings, torch.Tensor):
        raise CheckpointError(
            f"{emb_file}: damaged gallery embeddings: expected an object with an 'embeddings' "
            f"tensor, found {describe(embeddings if isinstance(payload, dict) else payload)}"
        )
    return embeddings


def _check_items(images: torch.Tensor, labels: Sequence[str | None], names: Sequence[str]) -> None:
    if images.dim() != 4:
        raise DataError(f"gallery images: expected [N, C, H, W], got {list(images.shape)}")
    if not len(images) == len(labels) == len(names):
        raise DataError(
            f"gallery items: {len(images)} images, {len(labels)} labels and {len(names)} names"
        )


def refuse_existing_gallery(out: Path, overwrite: bool) -> None:
    """Raise `DataError` if `out` is a file, a folder of other files, or holds a gallery and
    not `overwrite`. A gallery left aside by an interrupted replacement is put back first."""
    _put_back_interrupted(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is a file; expected a new gallery folder")
    if not out.exists():
        return
    is_gallery = (out / INFO_FILE).exists() or (out / EMBEDDINGS_FILE).exists()
    if is_gallery and not overwrite:
        raise DataError(
            f"{out}: a gallery is already there; add to it with 'siamnet index add', "
            "or pass --overwrite to replace it"
        )
    others = sorted(p.name for p in out.iterdir() if f".{TEMP_MARK}-" not in p.name)
    if not is_gallery and others:
        raise DataError(
            f"{out}: a folder of other files ({others[0]}, ...), not a gallery; a gallery is "
            "written as a folder of its own: give --out a new or empty folder"
        )
