"""The model behind the HTTP service: a checkpoint, a support set and a gallery, loaded once.

The support set and the gallery are embedded (or read) at start-up; a request embeds only its
own images. Each request decodes its uploads in its own thread (in parallel), then its images
join those of other requests arriving within a few milliseconds and go through the model in one
call (`siamnet.serve.batching.MicroBatcher`, one worker thread, under one lock and
`torch.inference_mode`); scoring a request's embeddings runs in its own thread again. Every
request may carry several images. No web framework is needed here.
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from siamnet import __version__
from siamnet.checkpoint import Checkpoint, load_checkpoint
from siamnet.errors import ArgumentError, DataError, SiamnetError
from siamnet.gallery import (
    INFO_FILE,
    Gallery,
    build_gallery,
    checkpoint_identity,
    load_gallery,
    make_searcher,
    read_gallery_items,
    search_matches,
    shown_name,
)
from siamnet.images import IMAGE_FORMATS, read_image_bytes, read_support_folder
from siamnet.infer import (
    CompareResult,
    SupportSet,
    build_support,
    class_scores,
    classify,
    finite_number,
)
from siamnet.models.embed import embed_images
from siamnet.serve.batching import MicroBatcher
from siamnet.serve.limits import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH, check_batching

#: Largest image (width x height) an upload may declare; larger ones are refused before
#: decoding, so a small file cannot expand into gigabytes of pixels.
MAX_PIXELS = 40_000_000

#: Most gallery items one search may return.
MAX_TOP_K = 100

#: Most images one request may carry.
MAX_IMAGES = 256

#: An upload: its bytes and how errors name it (its field and file name).
Upload = tuple[bytes, str]


#: Uploads decoded at the same time; more would only add memory, not speed.
DECODERS = max(1, min(4, os.cpu_count() or 1))


class NotAvailable(SiamnetError):
    """The service was started without what a request needs (a support set, a gallery)."""


class NotFound(SiamnetError):
    """A request names something the service does not have (a support class)."""


@dataclass
class SupportState:
    """The support set, embedded once, and one PNG per class to show beside its name."""

    support: SupportSet
    images: int
    thumbnails: list[bytes]
    folder: Path
    failures: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class GalleryState:
    """A gallery and its searcher, both made once."""

    gallery: Gallery
    searcher: Any
    source: str
    failures: list[tuple[str, str]] = field(default_factory=list)


class ModelService:
    """Answers compare, classify and search requests for one checkpoint.

    `threshold` overrides the checkpoint's calibrated one; `invert` turns every image read
    (uploads and the support folder) into ``255 - value``; `scoring` is how a query is scored
    against a support class (``mean`` or ``prototype``, see `siamnet.infer.class_scores`).
    Images of requests arriving within `batch_window_ms` milliseconds of each other are
    embedded together, up to `max_batch` images a model call (1: each request on its own).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        support: SupportState | None = None,
        gallery: GalleryState | None = None,
        threshold: float | None = None,
        invert: bool = False,
        scoring: str = "mean",
        batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if scoring not in ("mean", "prototype"):
            raise ArgumentError(f"--scoring {scoring!r}: expected 'mean' or 'prototype'")
        check_batching(batch_window_ms, max_batch)
        self.checkpoint = checkpoint
        self.support = support
        self.gallery = gallery
        if threshold is None:
            threshold = checkpoint.metadata.get("threshold")
        self.threshold = finite_number(threshold, "threshold")
        self.invert = invert
        self.scoring = scoring
        self.device = next(checkpoint.model.parameters()).device
        self._decoders = threading.BoundedSemaphore(DECODERS)
        self.batcher = MicroBatcher(self._embed, batch_window_ms / 1000, max_batch)
        self._identity: str | None = None

    # --- start-up ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        checkpoint: str | os.PathLike[str],
        support_dir: str | os.PathLike[str] | None = None,
        gallery_dir: str | os.PathLike[str] | None = None,
        device: torch.device | str = "cpu",
        threshold: float | None = None,
        invert: bool = False,
        scoring: str = "mean",
        batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> ModelService:
        """Load the checkpoint, embed the support folder and read (or make) the gallery."""
        threshold = finite_number(threshold, "threshold")
        check_batching(batch_window_ms, max_batch)
        ckpt = load_checkpoint(checkpoint, device)
        support = load_support(ckpt, support_dir, invert) if support_dir is not None else None
        gallery = load_gallery_state(ckpt, gallery_dir, invert) if gallery_dir is not None else None
        return cls(ckpt, support, gallery, threshold, invert, scoring, batch_window_ms, max_batch)

    # --- requests ----------------------------------------------------------------------------

    def decode(self, data: bytes, name: str) -> torch.Tensor:
        """Uploaded bytes as the model's input, uint8 ``[C, H, W]``; `DataError` naming the
        upload if they are not an image this service reads, whatever the decoder raised."""
        spec = self.checkpoint.spec
        with self._decoders:
            check_pixel_count(data, name)
            try:
                shape = (spec.in_channels, spec.image_size)
                return read_image_bytes(data, *shape, self.invert, name, resize=spec.resize)
            except (SiamnetError, MemoryError):
                raise
            except Exception as exc:  # an upload's bytes can break a decoder in any way
                reason = " ".join(str(exc).split())[:160] or type(exc).__name__
                raise DataError(f"{name}: not a readable image ({reason})") from exc

    def embed_uploads(self, uploads: list[Upload]) -> torch.Tensor:
        """Embeddings ``[n, D]`` (float32, on the model's device) of encoded images, decoded in
        this thread and embedded in a micro-batch with other requests' images."""
        check_image_count(len(uploads))
        with self.batcher.arriving() as run:
            images = torch.stack([self.decode(data, name) for data, name in uploads])
            return run(images)

    def compare(self, a: bytes, b: bytes, name_a: str = "a", name_b: str = "b") -> dict[str, Any]:
        """Score two encoded images: ``score``, ``same`` (None without a threshold),
        ``threshold``, ``distance`` (distance heads) and ``head``. Names are for errors."""
        e = self.embed_uploads([(a, name_a), (b, name_b)])
        head, t = self.checkpoint.model.head, self.threshold
        with torch.inference_mode():
            score = float(head.to_score(head(e[:1], e[1:]))[0])
        result = CompareResult(score, score >= (0.0 if t is None else t), t or 0.0)
        result.distance = head.distance(score)
        answer = result.to_dict()
        if t is None:
            answer.update(same=None, threshold=None)
        return {**answer, "head": self.checkpoint.spec.head}

    def embed(self, uploads: list[Upload]) -> dict[str, Any]:
        """Embeddings of encoded images, as lists of floats, with the model that made them
        (its identity is the sha256 a gallery records, see `siamnet.gallery.checkpoint_identity`).
        """
        vectors = self.embed_uploads(uploads).float().cpu()
        return {"model": self.model_identity(), "embeddings": vectors.tolist()}

    def classify(
        self, data: bytes, reject_below: float | None = None, name: str = "image"
    ) -> dict[str, Any]:
        """Classify one encoded image against the support set: the prediction (as
        `siamnet.infer.Prediction`) and every class ranked by score, best first."""
        return self.classify_many([(data, name)], reject_below)[0]

    def classify_many(
        self, uploads: list[Upload], reject_below: float | None = None
    ) -> list[dict[str, Any]]:
        """`classify` for each of several encoded images, in one model call."""
        state = self._need_support()
        reject_below = finite_number(reject_below, "reject_below")
        queries = self.embed_uploads(uploads)
        with torch.inference_mode():
            predictions = classify(
                self.checkpoint, state.support, queries, reject_below, self.scoring
            )
            scores = class_scores(self.checkpoint.model, state.support, queries, self.scoring)
        scores = scores.float().cpu()
        orders = torch.argsort(scores, dim=1, descending=True, stable=True).tolist()
        names = [shown_name(c) for c in state.support.classes]
        answers = []
        for prediction, row, order in zip(predictions, scores.tolist(), orders, strict=True):
            ranking = [{"class_index": k, "name": names[k], "score": finite(row[k])} for k in order]
            answer = prediction.to_dict()
            for key in ("label", "best", "runner_up"):
                answer[key] = None if answer[key] is None else shown_name(answer[key])
            answer["score"] = finite(answer["score"])
            answer["runner_up_score"] = finite(answer["runner_up_score"])
            answers.append({**answer, "reject_below": reject_below, "ranking": ranking})
        return answers

    def search(self, data: bytes, k: int = 5, name: str = "image") -> dict[str, Any]:
        """The `k` gallery items most similar to one encoded image, best first."""
        found = self.search_many([(data, name)], k)
        return {"k": k, "threshold": self.threshold, "matches": found[0]}

    def search_many(self, uploads: list[Upload], k: int = 5) -> list[list[dict[str, Any]]]:
        """The matches (best first) of each of several encoded images, in one model call and
        one search."""
        state = self._need_gallery()
        check_top_k(k)
        queries = self.embed_uploads(uploads)
        with torch.inference_mode():
            indices, scores = state.searcher.search(queries, k)
        t = self.threshold
        return [
            search_matches(state.gallery, row_indices, row_scores, t, public=True)
            for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
        ]

    def search_method(self) -> dict[str, Any]:
        """How the gallery is searched: ``method`` and, for an approximate index, ``nprobe``
        or ``ef_search``."""
        return self._need_gallery().searcher.describe()

    def support_thumbnail(self, class_index: int) -> bytes:
        """PNG of the first support image of a class (as it is on disk, at the model's size)."""
        state = self._need_support()
        if not 0 <= class_index < len(state.thumbnails):
            raise NotFound(
                f"support class {class_index}: expected an index from 0 to "
                f"{len(state.thumbnails) - 1}"
            )
        return state.thumbnails[class_index]

    def info(self) -> dict[str, Any]:
        """What the service runs: model, head, classes, threshold, versions, support, gallery."""
        ckpt, spec = self.checkpoint, self.checkpoint.spec
        support = None
        if self.support is not None:
            support = {
                "classes": [shown_name(c) for c in self.support.support.classes],
                "images": self.support.images,
                "scoring": self.scoring,
                "skipped": len(self.support.failures),
            }
        gallery = None
        if self.gallery is not None:
            g = self.gallery.gallery
            gallery = {
                "items": len(g),
                "labelled": sum(label is not None for label in g.labels),
                "dim": g.dim,
                "search": self.gallery.searcher.describe(),
                "skipped": len(self.gallery.failures),
            }
        return {
            "checkpoint": shown_name(ckpt.path.name),
            "model": spec.model,
            "head": spec.head,
            "loss": spec.loss,
            "in_channels": spec.in_channels,
            "image_size": list(spec.image_size),
            "classes": [shown_name(str(c)) for c in ckpt.metadata.get("classes") or []],
            "threshold": self.threshold,
            "invert": self.invert,
            "checkpoint_version": ckpt.metadata.get("siamnet_version"),
            "version": __version__,
            "device": str(self.device),
            "support": support,
            "gallery": gallery,
            "max_top_k": MAX_TOP_K,
            "max_images": MAX_IMAGES,
            "batch_window_ms": self.batcher.window * 1000,
            "max_batch": self.batcher.max_batch,
            "model_calls": self.batcher.calls,
            "embedded_images": self.batcher.images,
        }

    # --- internals ---------------------------------------------------------------------------

    def model_identity(self) -> dict[str, Any]:
        """The model that makes this service's embeddings: checkpoint file name, sha256 of its
        description and weights (as galleries record it), architecture, head and dimension."""
        if self._identity is None:
            self._identity = checkpoint_identity(self.checkpoint)
        spec = self.checkpoint.spec
        return {
            "checkpoint": shown_name(self.checkpoint.path.name),
            "sha256": self._identity,
            "model": spec.model,
            "head": spec.head,
            "dim": int(self.checkpoint.model.backbone.out_dim),
        }

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """The model call: images uint8 ``[N, C, H, W]`` -> embeddings ``[N, D]`` on the
        model's device (run by the batcher's one worker thread)."""
        return embed_images(self.checkpoint.model, images, device=self.device)

    def _need_support(self) -> SupportState:
        if self.support is None:
            raise NotAvailable(
                "no support set: start the service with --support DIR "
                "(one sub-folder of images per class) to classify"
            )
        return self.support

    def _need_gallery(self) -> GalleryState:
        if self.gallery is None:
            raise NotAvailable(
                "no gallery: start the service with --gallery DIR (a folder made by "
                "'siamnet index build', or a folder of images) to search"
            )
        return self.gallery


def load_support(
    ckpt: Checkpoint, folder: str | os.PathLike[str], invert: bool = False
) -> SupportState:
    """Read a support folder (one sub-folder per class) and embed it once."""
    spec = ckpt.spec
    images, labels, classes, paths, failures = read_support_folder(
        folder, spec.in_channels, spec.image_size, invert, resize=spec.resize
    )
    with torch.inference_mode():
        support = build_support(ckpt, images, labels, classes, paths)
    first = np.unique(labels.numpy(), return_index=True)[1]
    shown = 255 - images[first] if invert else images[first]
    thumbnails = [png_bytes(image) for image in shown]
    return SupportState(support, len(images), thumbnails, Path(folder), failures)


def load_gallery_state(
    ckpt: Checkpoint, folder: str | os.PathLike[str], invert: bool = False
) -> GalleryState:
    """A gallery folder made by ``siamnet index build`` (refused if another model made it),
    searched by its own method (its saved FAISS index as it is, or exact), or a folder of
    images embedded now and searched exactly (a sub-folder path is an image's label)."""
    d = Path(folder)
    if not d.is_dir():
        found = "a file" if d.exists() else "nothing there"
        raise DataError(
            f"{d}: expected a gallery folder (made by 'siamnet index build') or a folder of "
            f"images, found {found}"
        )
    device = next(ckpt.model.parameters()).device
    failures: list[tuple[str, str]] = []
    if (d / INFO_FILE).is_file():
        gallery = load_gallery(d, device)
        gallery.check_model(ckpt)
        source = "gallery"
    else:
        spec = ckpt.spec
        items = read_gallery_items(d, spec.in_channels, spec.image_size, invert, resize=spec.resize)
        with torch.inference_mode():
            gallery = build_gallery(ckpt, items.images, items.labels, items.names)
        gallery.embeddings = gallery.embeddings.to(device)
        failures = items.failures
        source = "images"
    searcher = make_searcher(gallery, ckpt.model.head)  # the gallery's own method
    return GalleryState(gallery, searcher, source, failures)


def check_top_k(k: int) -> None:
    """`k` must be a number of gallery items from 1 to `MAX_TOP_K`."""
    if not 1 <= k <= MAX_TOP_K:
        raise ArgumentError(f"top_k {k}: expected a number of items from 1 to {MAX_TOP_K}")


def check_image_count(count: int) -> None:
    """A request carries from 1 to `MAX_IMAGES` images."""
    if not 1 <= count <= MAX_IMAGES:
        raise ArgumentError(f"{count} images: a request may carry from 1 to {MAX_IMAGES}")


def check_pixel_count(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header declares more than `max_pixels` pixels, before decoding.
    Bytes Pillow cannot open are left for the decoder to report."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size
    except Exception:  # the decoder reports what is wrong with these bytes
        return
    if width * height > max_pixels:
        raise DataError(
            f"{name}: image of {width}x{height} pixels; at most {max_pixels // 1_000_000} "
            "megapixels are accepted"
        )


def png_bytes(image: torch.Tensor) -> bytes:
    """uint8 ``[C, H, W]`` (1 or 3 channels) encoded as PNG."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def finite(value: float | None) -> float | None:
    """`value` as a float, or None when it is missing or not finite (JSON has no infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
