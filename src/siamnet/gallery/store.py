"""A gallery on disk: embeddings of many images, made once, searched for the items nearest a query.

On disk a gallery is a folder with

- ``embeddings.pt``: ``{"embeddings": float32 [N, D]}`` written by `torch.save` with tensors
  only, read back with ``weights_only=True`` (nothing in it can run code);
  and ``{"content": uint8 [N, 16]}``, the start of the sha256 of each item's pixels, by which
  adding tells the items it already holds;
- ``index.faiss`` (where the gallery was built with a FAISS method: ``flat``, ``ivf-flat``,
  ``ivf-pq``, ``hnsw``): the trained index, as ``faiss.write_index`` writes it, read back as it
  is (never retrained; `siamnet.gallery.faiss_index`);
- ``gallery.json``: format marker, item count, label (or null) and file name of each item, the
  head kind, the embedding size, the identity of the checkpoint that made it (a sha256 of its
  model description and weights), so that adding to it or searching it with another model is
  refused, the sha256 of ``embeddings.pt``, and the index's method, options and sha256.

A gallery is written whole: every file goes into a new folder beside it
(``.NAME.siamnet-PID-XXXXXXXX.new``) that then replaces the old folder in one step
(`siamnet.fileio.atomic_folder`), so a build, an ``--overwrite`` or an add that is killed
leaves the old gallery or the new one, never a mix. Loading checks the recorded sha256 and the
recorded count and size against ``embeddings.pt``, so two files that do not belong together
are refused; where the system has no one-step exchange and a replacement was cut between its
two renames, loading puts the previous gallery back.

Images are read and embedded a chunk at a time (`build_gallery_from`, `add_items_to_gallery`),
so memory holds one chunk of images and the gallery's embeddings. Writers of one gallery take
its lock (`siamnet.gallery.lock`) around the write: an add re-reads the gallery under the lock
when another writer changed it, so that no addition is lost, and a build refuses a gallery that
another build finished meanwhile. Adding skips the items the gallery already holds: the same
name, or the same pixels with the same label.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.checkpoint import Checkpoint
from siamnet.errors import ArgumentError, CheckpointError, DataError
from siamnet.fileio import atomic_folder, torch_bytes, write_file
from siamnet.gallery.faiss_index import (
    INDEX_FILE,
    INDEX_METHODS,
    IndexSpec,
    add_vectors,
    check_metric,
    import_faiss,
    index_bytes,
    read_index,
    train_index,
)
from siamnet.gallery.items import CONTENT_BYTES, GalleryItems, content_hashes
from siamnet.gallery.lock import LOCK_WAIT_S, gallery_lock
from siamnet.infer import model_of
from siamnet.models.embed import embed_chunks, embed_images
from siamnet.models.heads import HEADS, PairHead
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


FORMAT_VERSION = 2


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
    "index": ("an object describing the gallery's FAISS index", is_dict),
}


INDEX_RECORD_FIELDS: Rules = {
    "method": (
        f"one of {', '.join(INDEX_METHODS[1:])}",
        lambda v: is_str(v) and v in INDEX_METHODS[1:],
    ),
    "sha256": (f"the sha256 of {INDEX_FILE} (64 hex digits)", is_sha256),
    "metric": ("one of l1, l2, ip", lambda v: v in ("l1", "l2", "ip")),
    "dim": ("a positive whole number", is_positive_int),
    **{
        name: ("a positive whole number", is_positive_int)
        for name in IndexSpec.__dataclass_fields__
        if name != "method"
    },
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
    """Embeddings ``[N, D]`` with a label (or None) and a file name per item, the content hash
    of each item (uint8 ``[N, 16]``, zeros where unknown; None: not known for any) and the
    gallery's own FAISS index with its description (None: exact search)."""

    embeddings: torch.Tensor
    labels: list[str | None]
    files: list[str]
    head: str
    checkpoint: dict[str, Any]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    content: torch.Tensor | None = None
    index: Any | None = None
    index_record: dict[str, Any] | None = None
    info_sha256: str | None = None  # of gallery.json as read or written

    @property
    def whole(self) -> bool:
        """Whether the embeddings were read (see `load_gallery`'s `embeddings`)."""
        return self.embeddings.device.type != "meta"

    def need_whole(self, what: str) -> None:
        """Raise `ArgumentError` naming `what` if the embeddings were not read."""
        if not self.whole:
            raise ArgumentError(
                f"{self.path}: {what} needs the gallery's embeddings; it was read for its index "
                "alone (load_gallery(..., embeddings=True))"
            )

    @property
    def method(self) -> str:
        """The gallery's own search method: its index's (``flat``, ``ivf-flat``, ``ivf-pq``,
        ``hnsw``), or ``exact``."""
        return self.index_record["method"] if self.index_record else "exact"

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

    def held(self) -> tuple[set[str], set[tuple[bytes, str | None]]]:
        """The names of the items, and their (content hash, label) pairs where known."""
        pairs: set[tuple[bytes, str | None]] = set()
        if self.content is not None:
            raw = self.content.contiguous().numpy().tobytes()
            n = CONTENT_BYTES
            unknown = bytes(n)
            for i, label in enumerate(self.labels):
                key = raw[i * n : (i + 1) * n]
                if key != unknown:
                    pairs.add((key, label))
        return set(self.files), pairs


@dataclass
class Embedded:
    """New items embedded for a gallery: embeddings float32 ``[M, D]``, labels, names, content
    hashes uint8 ``[M, 16]``; the files that could not be read and the count of items left out
    because the gallery already held them."""

    embeddings: torch.Tensor
    labels: list[str | None]
    names: list[str]
    content: torch.Tensor
    failures: list[tuple[str, str]] = field(default_factory=list)
    already_held: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def without(self, names: set[str], pairs: set[tuple[bytes, str | None]]) -> Embedded:
        """These items less those of `names`, or of (content, label) in `pairs`."""
        keep = _new_positions(self.names, self.labels, self.content, names, pairs)
        if len(keep) == len(self):
            return self
        idx = torch.tensor(keep, dtype=torch.int64)
        return Embedded(
            self.embeddings[idx] if len(keep) else self.embeddings[:0],
            [self.labels[i] for i in keep],
            [self.names[i] for i in keep],
            self.content[idx],
            self.failures,
            self.already_held + len(self) - len(keep),
        )


def _new_positions(
    names: Sequence[str],
    labels: Sequence[str | None],
    content: torch.Tensor,
    held_names: set[str],
    held_pairs: set[tuple[bytes, str | None]],
) -> list[int]:
    """Positions of the items not held: neither their name nor (content, label) is."""
    raw, n = content.contiguous().numpy().tobytes(), CONTENT_BYTES
    return [
        i
        for i, (name, label) in enumerate(zip(names, labels, strict=True))
        if name not in held_names and (raw[i * n : (i + 1) * n], label) not in held_pairs
    ]


def embed_items(
    model: SiameseNet,
    chunks: Iterable[GalleryItems],
    held: tuple[set[str], set[tuple[bytes, str | None]]] | None = None,
    batch_size: int | None = None,
) -> Embedded:
    """Embed every chunk of items as it is read, leaving out the items `held` (names, and
    (content, label) pairs; see `Gallery.held`) and names already seen: memory holds one chunk
    of images at a time."""
    names_seen, pairs = held if held is not None else (set(), set())
    names_seen = set(names_seen)
    labels: list[str | None] = []
    names: list[str] = []
    contents: list[torch.Tensor] = []
    failures: list[tuple[str, str]] = []
    counts = {"held": 0}

    def new_images() -> Iterator[torch.Tensor]:
        for items in chunks:
            failures.extend(items.failures)
            _check_items(items.images, items.labels, items.names)
            content = content_hashes(items.images)
            keep = _new_positions(items.names, items.labels, content, names_seen, pairs)
            counts["held"] += len(items.names) - len(keep)
            if not keep:
                continue
            idx = torch.tensor(keep, dtype=torch.int64)
            labels.extend(items.labels[i] for i in keep)
            names.extend(str(items.names[i]) for i in keep)
            names_seen.update(str(items.names[i]) for i in keep)
            contents.append(content[idx])
            yield items.images if len(keep) == len(items.names) else items.images[idx]

    embedded = [e for e in embed_chunks(model, new_images(), batch_size=batch_size) if len(e)]
    return Embedded(
        torch.cat(embedded) if embedded else torch.zeros(0, 0),
        labels,
        names,
        torch.cat(contents) if contents else torch.zeros(0, CONTENT_BYTES, dtype=torch.uint8),
        failures,
        counts["held"],
    )


def index_dim_and_metric(
    model: SiameseNet, channels: int, size: tuple[int, int]
) -> tuple[int, str]:
    """The size and FAISS metric of the vectors a gallery of `model` indexes (its head's
    `search_vectors` of one embedding), found from one blank image ``[channels, *size]``."""
    blank = torch.zeros(1, channels, *size, dtype=torch.uint8)
    with torch.no_grad():
        vector = model.head.search_vectors(embed_images(model, blank).float().cpu())
    return int(vector.shape[1]), model.head.faiss_metric


def with_index(gallery: Gallery, head: PairHead, spec: IndexSpec, seed: int = 0) -> Gallery:
    """`gallery` with a new index of `spec` over its items (trained here); ``exact``: none."""
    if spec.method == "exact":
        return replace(gallery, index=None, index_record=None)
    metric = check_metric(head.faiss_metric)
    vectors = head.search_vectors(gallery.embeddings.detach().float().cpu())
    resolved = spec.resolved(len(vectors), int(vectors.shape[1]), metric)
    index = train_index(vectors, metric, resolved, seed)
    record = {**resolved.record(), "metric": metric, "dim": int(vectors.shape[1])}
    return replace(gallery, index=index, index_record=record)


def build_gallery_from(
    source: Checkpoint | SiameseNet,
    chunks: Iterable[GalleryItems],
    out: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    index: IndexSpec | None = None,
    lock_wait_s: float = LOCK_WAIT_S,
) -> tuple[Gallery, Embedded]:
    """A new gallery of the items of `chunks`, embedded a chunk at a time, indexed by `index`
    (default: exact search, no index) and written to `out` if given; returns it and what was
    embedded. An existing gallery at `out` is refused unless `overwrite`, also one that another
    build wrote while this one ran."""
    model = model_of(source)
    spec = (index or IndexSpec()).check()
    if out is not None:
        refuse_existing_gallery(Path(out), overwrite)
    got = embed_items(model, chunks, batch_size=batch_size)
    if len(got) == 0:
        raise DataError(f"{out or 'gallery'}: no images to put in the gallery")
    gallery = Gallery(
        embeddings=got.embeddings,
        labels=got.labels,
        files=got.names,
        head=model.head.kind,
        checkpoint=_checkpoint_record(source),
        content=got.content,
    )
    gallery = with_index(gallery, model.head, spec)
    if out is not None:
        with gallery_lock(out, lock_wait_s):
            refuse_existing_gallery(Path(out), overwrite)
            save_gallery(gallery, out)
    return gallery, got


def build_gallery(
    source: Checkpoint | SiameseNet,
    images: torch.Tensor,
    labels: Sequence[str | None],
    names: Sequence[str],
    out: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    index: IndexSpec | None = None,
) -> Gallery:
    """Embed uint8 images ``[N, C, H, W]`` once into a new gallery, written to `out` if given.

    An existing gallery at `out` is refused unless `overwrite`.
    """
    _check_items(images, labels, names)
    items = GalleryItems(images, list(labels), [str(n) for n in names])
    return build_gallery_from(source, [items], out, batch_size, overwrite, index)[0]


def add_items_to_gallery(
    gallery: Gallery | str | os.PathLike[str],
    source: Checkpoint | SiameseNet,
    chunks: Iterable[GalleryItems],
    batch_size: int | None = None,
    lock_wait_s: float = LOCK_WAIT_S,
) -> tuple[Gallery, Embedded]:
    """Embed the items of `chunks` that the gallery does not hold yet (a chunk at a time) and
    append them (and to its index, never retrained); a gallery loaded from (or given as) a
    folder is rewritten there under its lock, re-read first if another writer changed it.
    Returns the gallery and what was added. A different checkpoint is refused."""
    if isinstance(gallery, Gallery) and not gallery.whole and gallery.path is not None:
        gallery = gallery.path  # read for its index alone: read it whole
    g = gallery if isinstance(gallery, Gallery) else load_gallery(gallery)
    g.check_model(source)
    g.need_whole("adding")
    model = model_of(source)
    got = embed_items(model, chunks, g.held(), batch_size)
    if g.path is None:
        return _merged(g, got, model.head), got
    with gallery_lock(g.path, lock_wait_s):
        current = _as_on_disk(g)
        if current is not g:
            current.check_model(source)
            got = got.without(*current.held())
        if len(got) == 0:
            return current, got
        merged = _merged(current, got, model.head)
        save_gallery(merged, current.path)
    return merged, got


def add_to_gallery(
    gallery: Gallery | str | os.PathLike[str],
    source: Checkpoint | SiameseNet,
    images: torch.Tensor,
    labels: Sequence[str | None],
    names: Sequence[str],
    batch_size: int | None = None,
) -> Gallery:
    """Embed only the new images ``[M, C, H, W]`` (those the gallery does not hold: see
    `add_items_to_gallery`) and append them; a gallery loaded from (or given as) a folder is
    rewritten there. A different checkpoint is refused."""
    _check_items(images, labels, names)
    items = GalleryItems(images, list(labels), [str(n) for n in names])
    return add_items_to_gallery(gallery, source, [items], batch_size)[0]


def _as_on_disk(g: Gallery) -> Gallery:
    """`g` if its folder still holds it (the same ``gallery.json``), else the folder read
    again (another writer changed it)."""
    try:
        now = hashlib.sha256((Path(g.path) / INFO_FILE).read_bytes()).hexdigest()
    except OSError:
        now = None
    return g if now is not None and now == g.info_sha256 else load_gallery(g.path)


def _merged(g: Gallery, new: Embedded, head: PairHead) -> Gallery:
    """`g` with the items of `new` appended (to its index too, a copy of it)."""
    if len(new) == 0:
        return g
    if new.embeddings.shape[1] != g.dim:
        raise CheckpointError(
            f"{g.path}: embeddings of size {g.dim}, the model gives {new.embeddings.shape[1]}"
        )
    old_content = g.content
    if old_content is None:
        old_content = torch.zeros(len(g), CONTENT_BYTES, dtype=torch.uint8)
    index = g.index
    if index is not None:
        index = import_faiss().clone_index(index)
        add_vectors(index, head.search_vectors(new.embeddings))
    return replace(
        g,
        embeddings=torch.cat([g.embeddings.cpu(), new.embeddings]),
        labels=g.labels + new.labels,
        files=g.files + new.names,
        content=torch.cat([old_content, new.content]),
        index=index,
    )


def save_gallery(gallery: Gallery, folder: str | os.PathLike[str]) -> None:
    """Write `gallery` into `folder` as a whole: a new folder beside it, swapped into place.

    Other files in an existing gallery folder are kept. A full disk is one line, ``no space
    left writing FILE``, and leaves the old gallery as it was.
    """
    d = Path(folder)
    gallery.need_whole("saving")
    if d.exists() and not d.is_dir():
        raise DataError(f"{d}: expected a gallery folder, found a file")
    remove_stale_temps(d.parent)
    tensors = {"embeddings": gallery.embeddings.detach().float().cpu().contiguous()}
    if gallery.content is not None:
        tensors["content"] = gallery.content.contiguous()
    data = torch_bytes(tensors)
    info = {**gallery.to_json(), "embeddings_sha256": hashlib.sha256(data).hexdigest()}
    index = None
    if gallery.index is not None and gallery.index_record is not None:
        index = index_bytes(gallery.index)
        info["index"] = {**gallery.index_record, "sha256": hashlib.sha256(index).hexdigest()}
    text = (json.dumps(info, indent=1) + "\n").encode("utf-8")
    with atomic_folder(d, keep_others=True, drop=(INDEX_FILE,)) as tmp:
        write_file(tmp / EMBEDDINGS_FILE, data, shown_as=d / EMBEDDINGS_FILE)
        if index is not None:
            write_file(tmp / INDEX_FILE, index, shown_as=d / INDEX_FILE)
        write_file(tmp / INFO_FILE, text, shown_as=d / INFO_FILE)
    gallery.path = d
    gallery.info_sha256 = hashlib.sha256(text).hexdigest()


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


def load_gallery(
    folder: str | os.PathLike[str], device: torch.device | str = "cpu", embeddings: bool = True
) -> Gallery:
    """Read a gallery folder; never executes code from it. A gallery whose files do not match
    each other (sha256, count, size) or whose description has a field of the wrong type is
    refused with one line naming the file and the field.

    Without `embeddings`, a gallery with a FAISS index that searches alone (any head but
    ``l1``) is read without ``embeddings.pt``: its `Gallery.embeddings` is a ``meta`` tensor
    of the right shape (no data), enough for `make_searcher`'s own method; exact search,
    adding and saving need the gallery read whole."""
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
    info, info_sha256 = _read_info(info_file)
    count, dim = info["count"], info["dim"]
    needed = embeddings or "index" not in info or info["index"].get("metric") == "l1"
    if needed:
        vectors, content = _load_embeddings(emb_file, info)
    else:  # the index is searched alone: embeddings.pt is not read
        vectors, content = torch.empty(count, dim, device="meta"), None
    index = _read_saved_index(d, info, count) if "index" in info else None
    known = {"format", "format_version", "siamnet_version", "count", "dim", "head", "checkpoint"}
    known |= {"labels", "files", "embeddings_sha256", "index"}
    return Gallery(
        embeddings=vectors.to(device) if needed else vectors,
        labels=info["labels"],
        files=info["files"],
        head=info["head"],
        checkpoint=dict(info["checkpoint"]),
        path=d,
        extra={k: v for k, v in info.items() if k not in known},
        content=content,
        index=index,
        index_record={k: v for k, v in info["index"].items() if k != "sha256"} if index else None,
        info_sha256=info_sha256,
    )


def _load_embeddings(
    emb_file: Path, info: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``embeddings.pt``'s embeddings and content hashes, checked against ``gallery.json``."""
    count, dim = info["count"], info["dim"]
    try:
        raw = emb_file.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{emb_file.parent}: damaged gallery, {EMBEDDINGS_FILE} is missing"
        ) from exc
    check_companion_sha256(
        emb_file,
        raw,
        info.get("embeddings_sha256"),
        INFO_FILE,
        "rebuild the gallery with 'siamnet index build --overwrite'",
    )
    embeddings, content = _read_embeddings(emb_file, raw)
    if embeddings.dtype != torch.float32 or list(embeddings.shape) != [count, dim]:
        raise CheckpointError(
            f"{emb_file}: expected a float32 tensor of shape [{count}, {dim}] ({INFO_FILE} "
            f"records {count} items of size {dim}), found {describe(embeddings)}; the two files "
            "do not belong together: rebuild the gallery with 'siamnet index build --overwrite'"
        )
    if content is not None and (content.dtype != torch.uint8 or len(content) != count):
        raise CheckpointError(
            f"{emb_file}: expected content hashes uint8 [{count}, {CONTENT_BYTES}], found "
            f"{describe(content)}; rebuild the gallery with 'siamnet index build --overwrite'"
        )
    return embeddings, content


def _read_saved_index(d: Path, info: dict[str, Any], count: int) -> Any:
    """The gallery's FAISS index as saved, checked against ``gallery.json``; never trained."""
    record = info["index"]
    file = d / INDEX_FILE
    check_fields(d / INFO_FILE, record, INDEX_RECORD_FIELDS, ("method", "sha256"), "index.")
    try:
        raw = file.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{file}: missing; {INFO_FILE} records a {record['method']} index: "
            "rebuild the gallery with 'siamnet index build --overwrite'"
        ) from exc
    remedy = "rebuild the gallery with 'siamnet index build --overwrite'"
    check_companion_sha256(file, raw, record["sha256"], INFO_FILE, remedy)
    return read_index(file, raw, record, count, INFO_FILE)


def _read_info(info_file: Path) -> tuple[dict[str, Any], str]:
    """``gallery.json``, validated field by field (`GALLERY_FIELDS`), and its sha256."""
    try:
        text = info_file.read_bytes()
        info = json.loads(text.decode("utf-8"))
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
    return info, hashlib.sha256(text).hexdigest()


def _read_embeddings(emb_file: Path, raw: bytes) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``embeddings`` tensor of ``embeddings.pt`` (its bytes `raw`), weights only, and the
    ``content`` hashes (None in a gallery written before they were kept)."""
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
    content = payload.get("content")
    if content is not None and not isinstance(content, torch.Tensor):
        raise CheckpointError(
            f"{emb_file}: damaged gallery embeddings: 'content' is {describe(content)}, "
            "expected a tensor"
        )
    return embeddings, content


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
