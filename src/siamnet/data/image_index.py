"""Images kept on disk: `ImageFiles`, a uint8 ``[N, C, H, W]`` set read from its files when
asked for, and the helpers that treat it and an in-memory tensor alike.

A folder of photographs is indexed, not decoded, when it is loaded (`read_headers`: each file's
size and mode from its header, Pillow's lazy open). Every read goes through
`siamnet.images.read_image` at the set's one size and channel count, so an image reads the same
whether it was decoded into a cache (`ImageFiles.decode` of every row) or per batch in a loader
worker: training on either gives the same numbers.

Subsets, rotated copies and concatenations are views (row and quarter-turn tensors over the same
paths); indexing an `ImageFiles` like a tensor (``images[i]``, ``images[a:b]``,
``images[index]``) decodes those rows, so code that embeds in slices streams unchanged.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamnet.errors import DataError
from siamnet.images import _grey_palette, _identify, _open_file, _reason, read_image
from siamnet.progress import progress

#: Pillow modes read as grey (`siamnet.images.to_8bit` makes them ``L``); palette images are
#: grey when their palette is.
GREY_MODES = ("1", "L", "LA", "La", "I", "F")
#: EXIF orientations that turn an image on its side (height and width swap).
_SIDEWAYS = (5, 6, 7, 8)
#: Files decoded on threads at once (bounds the memory in flight).
_DECODE_CHUNK = 256


def decode_threads() -> int:
    """Threads that decode images in one process (Pillow releases the GIL while decoding)."""
    return min(16, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class Header:
    """What a file's header says: its size ``(H, W)`` as seen (EXIF orientation applied), its
    Pillow mode, and whether it reads as grey."""

    size: tuple[int, int]
    mode: str
    grey: bool


def read_header(path: str | os.PathLike[str]) -> Header:
    """The `Header` of the image file at `path`, nothing decoded; a `DataError` naming the file
    when it is no image of an accepted format (as `siamnet.images.open_image` says)."""
    label = str(path)
    with _open_file(Path(path), label) as fh:
        try:
            with _identify(fh, label) as image:
                width, height = image.size
                mode = image.mode
                orientation = image.getexif().get(0x0112, 1) if image.format == "JPEG" else 1
                grey = mode in GREY_MODES or mode.startswith("I;16")
                if mode in ("P", "PA"):
                    grey = _grey_palette(image)
        except DataError:
            raise
        except Exception as exc:  # decoders raise anything
            raise DataError(f"{label}: not a readable image ({_reason(exc)})") from exc
    if orientation in _SIDEWAYS:
        height, width = width, height
    return Header((height, width), mode, grey)


def read_headers(paths: Sequence[Path], desc: str = "indexing") -> list[Header]:
    """`read_header` of each file, on a thread pool, in order."""
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        bar = progress(pool.map(read_header, paths), total=len(paths), desc=desc, unit="img")
        try:
            return list(bar)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()


def size_summary(headers: Sequence[Header]) -> str:
    """One line on the sizes and modes of `headers`: heights and widths (least, median,
    most), how many distinct sizes, and how many files of each mode."""
    sizes = np.array([h.size for h in headers], dtype=np.int64).reshape(-1, 2)
    distinct = len({h.size for h in headers})
    hs, ws = sizes[:, 0], sizes[:, 1]
    modes = ", ".join(f"{m} {n:,}" for m, n in Counter(h.mode for h in headers).most_common())
    return (
        f"image sizes: heights {hs.min()}..{hs.max()} (median {int(np.median(hs))}), widths "
        f"{ws.min()}..{ws.max()} (median {int(np.median(ws))}), {distinct:,} distinct; "
        f"modes: {modes}"
    )


class RowView:
    """uint8 images ``[N, C, H, W]`` that are rows of a source, each turned by ``turns[i]``
    quarter turns over ``(H, W)`` (`torch.rot90`): the part `ImageFiles` and `TurnedRows` share.
    A subclass says its `shape`, makes a view of other rows (`_view`) and decodes rows
    (`decode`); subsets and rotations are views, indexing like a tensor decodes."""

    dtype = torch.uint8
    rows: torch.Tensor
    turns: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        raise NotImplementedError

    def _view(self, rows: torch.Tensor, turns: torch.Tensor) -> Any:
        raise NotImplementedError

    def decode(self, index: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        """Bytes the rows take decoded as one tensor."""
        n, c, h, w = self.shape
        return n * c * h * w

    def take(self, index: torch.Tensor) -> Any:
        """The rows at `index` (int64 ``[M]`` or bool ``[N]``), still a view."""
        index = torch.as_tensor(index).to(self.rows.device)
        return self._view(self.rows[index], self.turns[index])

    def rotated(self, quarter_turns: int) -> Any:
        """Every row turned by `quarter_turns` more quarter turns (odd ones: square images
        only)."""
        h, w = self.shape[2:]
        if h != w and quarter_turns % 2:
            raise ValueError(f"quarter turns need square images, got {h}×{w}")
        turns = ((self.turns.to(torch.int64) + quarter_turns) % 4).to(torch.int8)
        return self._view(self.rows, turns)

    def __getitem__(self, key: Any) -> torch.Tensor:
        """Decoded rows, indexed as a tensor ``[N, C, H, W]`` would be."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, int):
            one = self.decode(torch.tensor([first % max(1, len(self))]), threads=0)[0]
            return one[rest] if rest else one
        if isinstance(first, slice):
            picked = self.decode(torch.arange(len(self))[first])
        else:
            picked = self.decode(torch.as_tensor(first))
        return picked[(slice(None), *rest)] if rest else picked


def _row_numbers(index: torch.Tensor | None, length: int) -> torch.Tensor:
    """int64 ``[M]``: `index` (int64 or bool, any shape) as row numbers; all `length` rows
    when None."""
    rows = torch.arange(length) if index is None else torch.as_tensor(index).reshape(-1)
    return torch.nonzero(rows).flatten() if rows.dtype == torch.bool else rows


class ImageFiles(RowView):
    """uint8 images ``[N, C, H, W]`` kept as files, read at ``(H, W) = size`` with `channels`
    when asked for. Row ``i`` is file ``paths[rows[i]]`` turned by ``turns[i]`` quarter turns."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        channels: int,
        size: tuple[int, int],
        rows: torch.Tensor | None = None,
        turns: torch.Tensor | None = None,
    ) -> None:
        self.paths = paths if isinstance(paths, tuple) else tuple(str(p) for p in paths)
        self.channels = int(channels)
        self.image_size = (int(size[0]), int(size[1]))
        self.rows = torch.arange(len(self.paths)) if rows is None else rows
        self.turns = torch.zeros(len(self.rows), dtype=torch.int8) if turns is None else turns

    def __repr__(self) -> str:
        n, c, h, w = self.shape
        return f"ImageFiles({n} images {c}×{h}×{w} uint8 read from {len(self.paths)} files)"

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.channels, *self.image_size))

    def _view(self, rows: torch.Tensor, turns: torch.Tensor) -> ImageFiles:
        return ImageFiles(self.paths, self.channels, self.image_size, rows, turns)

    def at_size(self, size: tuple[int, int]) -> ImageFiles:
        """The same rows read at `size` ``(H, W)``."""
        return ImageFiles(self.paths, self.channels, size, self.rows, self.turns)

    def read_row(self, row: int) -> torch.Tensor:
        """Row `row` as uint8 ``[C, H, W]``."""
        image = read_image(self.paths[int(self.rows[row])], self.channels, self.image_size)
        turns = int(self.turns[row])
        return torch.rot90(image, turns, dims=(1, 2)).contiguous() if turns else image

    def decode(
        self, index: torch.Tensor | None = None, threads: int | None = None, desc: str = ""
    ) -> torch.Tensor:
        """The rows at `index` (default: all) as uint8 ``[M, C, H, W]``, decoded on `threads`
        threads (default: `decode_threads`; 0 or 1: in this thread). `desc`: a progress bar."""
        order = _row_numbers(index, len(self)).tolist()
        out = torch.empty((len(order), self.channels, *self.image_size), dtype=torch.uint8)
        threads = decode_threads() if threads is None else threads
        quiet = {} if desc else {"disable": True}
        bar = progress(total=len(order), desc=desc, unit="img", **quiet)
        try:
            if threads <= 1 or len(order) < 2:
                for k, row in enumerate(order):
                    out[k] = self.read_row(row)
                    bar.update(1)
                return out
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for start in range(0, len(order), _DECODE_CHUNK):
                    chunk = order[start : start + _DECODE_CHUNK]
                    for k, image in enumerate(pool.map(self.read_row, chunk), start=start):
                        out[k] = image
                    bar.update(len(chunk))
            return out
        finally:
            bar.close()


class TurnedRows(RowView):
    """uint8 images ``[N, C, H, W]`` held in memory as `pixels` ``[P, C, H, W]`` without
    copies: row ``i`` is ``pixels[rows[i]]`` turned by ``turns[i]`` quarter turns. Rotated
    classes (`rotate_images` of a tensor) are views of this kind, so they take no memory of
    their own: each batch is turned as it is gathered (`index_select`), on the device that
    holds `pixels`."""

    def __init__(
        self,
        pixels: torch.Tensor,
        rows: torch.Tensor | None = None,
        turns: torch.Tensor | None = None,
    ) -> None:
        self.pixels = pixels
        device = pixels.device
        self.rows = torch.arange(len(pixels), device=device) if rows is None else rows
        self.turns = (
            torch.zeros(len(self.rows), dtype=torch.int8, device=device) if turns is None else turns
        )

    def __repr__(self) -> str:
        n, c, h, w = self.shape
        return f"TurnedRows({n} images {c}×{h}×{w} uint8 held as {len(self.pixels)})"

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.pixels.shape[1:]))

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def _view(self, rows: torch.Tensor, turns: torch.Tensor) -> TurnedRows:
        return TurnedRows(self.pixels, rows, turns)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TurnedRows:
        """The same view with its pixels, rows and turns on `device`."""
        return TurnedRows(
            self.pixels.to(device, non_blocking=non_blocking),
            self.rows.to(device, non_blocking=non_blocking),
            self.turns.to(device, non_blocking=non_blocking),
        )

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """The rows at int64 `index` ``[M]`` as uint8 ``[M, C, H, W]``: one gather, then each
        quarter turn applied where it is due (no host sync, so a CUDA step does not wait)."""
        if dim != 0:
            raise ValueError("TurnedRows selects rows only (dim 0)")
        index = index.to(self.rows.device)
        out = self.pixels.index_select(0, self.rows.index_select(0, index))
        turns = self.turns.index_select(0, index).view(-1, 1, 1, 1)
        square = out.shape[2] == out.shape[3]  # else only half turns (`rotated`)
        turned = out
        for k in (1, 2, 3) if square else (2,):
            turned = torch.where(turns == k, torch.rot90(out, k, dims=(2, 3)), turned)
        return turned

    def decode(self, index: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """The rows at `index` (default: all) as uint8 ``[M, C, H, W]``."""
        return self.index_select(0, _row_numbers(index, len(self)))


Images = torch.Tensor | ImageFiles | TurnedRows


def is_streamed(images: Images) -> bool:
    """Whether `images` are read from files when used (an `ImageFiles`)."""
    return isinstance(images, ImageFiles)


def take_images(images: Images, index: torch.Tensor) -> Images:
    """The rows of `images` at `index` (int64 ``[M]`` or bool ``[N]``): a tensor of a tensor,
    a view of an `ImageFiles` or `TurnedRows`."""
    return images.take(index) if isinstance(images, RowView) else images[index]


def rotate_images(images: Images, quarter_turns: int) -> Images:
    """`images` turned by `quarter_turns` quarter turns over ``(H, W)``: a view (an
    `ImageFiles` or `TurnedRows`), no copy of the pixels."""
    if isinstance(images, torch.Tensor):
        images = TurnedRows(images)
    return images.rotated(quarter_turns)


def concat_images(parts: Sequence[Images]) -> Images:
    """`parts` one after another: one `ImageFiles` over every part's files when all are on
    disk, one `TurnedRows` when all are views of the same pixels (or those pixels), else a
    tensor (every part decoded)."""
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, ImageFiles) for p in parts):
        return _concat_files(parts)  # type: ignore[arg-type]
    views = [TurnedRows(p) if isinstance(p, torch.Tensor) else p for p in parts]
    if all(isinstance(v, TurnedRows) and v.pixels is _pixels_of(views) for v in views):
        return TurnedRows(
            views[0].pixels,  # type: ignore[union-attr]
            torch.cat([v.rows for v in views]),  # type: ignore[union-attr]
            torch.cat([v.turns for v in views]),  # type: ignore[union-attr]
        )
    return torch.cat([p if isinstance(p, torch.Tensor) else p.decode() for p in parts])


def _pixels_of(views: Sequence[Any]) -> torch.Tensor | None:
    """The pixels of the first `TurnedRows` among `views` (None if none is one)."""
    return next((v.pixels for v in views if isinstance(v, TurnedRows)), None)


def _concat_files(parts: Sequence[ImageFiles]) -> ImageFiles:
    """`ImageFiles` `parts` one after another, as one set over every part's files."""
    first = parts[0]
    if any((p.channels, p.image_size) != (first.channels, first.image_size) for p in parts):
        raise DataError("cannot join image sets of different sizes or channels")
    paths: list[str] = []
    rows: list[torch.Tensor] = []
    for p in parts:
        rows.append(p.rows + len(paths))
        paths.extend(p.paths)
    turns = torch.cat([p.turns for p in parts])
    return ImageFiles(tuple(paths), first.channels, first.image_size, torch.cat(rows), turns)


def materialized(images: Images, desc: str = "") -> torch.Tensor:
    """`images` in memory as one tensor: a tensor as it is, the others decoded whole."""
    if isinstance(images, ImageFiles):
        return images.decode(desc=desc)
    return images.decode() if isinstance(images, TurnedRows) else images
