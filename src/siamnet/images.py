"""Reading image files for a trained model, converted to the model's channels (``L`` or
``RGB``) and size, as uint8 ``[C, H, W]``.

Geometry (`RESIZE_MODES`): ``crop`` (the default, and what every model trained now records)
scales an image so that it covers the target size, keeping its aspect, and cuts the excess
equally from both sides: the shorter side is resized to the target's, the longer one cropped
around the centre (a target of another aspect, H×W, crops to that aspect). An image already at
the target size is untouched. ``stretch`` resizes straight to the target size, squeezing a
wide image; checkpoints written before the mode was recorded keep it
(`siamnet.models.siamese.ModelSpec.resize`). Both resample bilinearly (Pillow's, antialiased
when shrinking), in one step: the crop box is handed to the resize.

Colour stays colour: a grey file given to a colour model is repeated into three channels, a
colour file given to a grey model becomes its luminance (Pillow's ``L`` conversion, which
`match_channels` reproduces exactly for tensors).

Pillow detects a file's format from its content, whatever the file is named, and can open
dozens of formats; only `IMAGE_FORMATS` are let through (EPS would run Ghostscript, and every
other decoder widens what a damaged or hostile upload can reach). `open_image` is the one way
in: every failure, whatever the decoder raises, is a one-line `DataError` naming the file, and an
image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused before it is decoded.

Every reader, for training and for inference alike, sees an image through `to_8bit`: EXIF
orientation applied, transparency laid onto white paper, and 16-bit, 32-bit and floating-point
pixels scaled (not clipped) to 8 bits. So one file reads the same whichever command reads it.

Images are taken as they are: a black-on-white drawing is not inverted to match white-on-black
training data (MNIST, the built-in digits) unless asked with ``invert=True`` (``--invert`` on the
command line).
"""

from __future__ import annotations

import io
import math
import operator
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from siamnet.errors import ArgumentError, DataError
from siamnet.progress import progress

#: The Pillow formats an image file may be in (``PPM`` covers PGM and PBM too).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

#: File name endings read as images when a folder is listed.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
)

_ACCEPTED = "PNG, JPEG, BMP, GIF, TIFF, WEBP and PPM/PGM/PBM"
_MODES = {1: "L", 3: "RGB"}

#: How an image is brought to a model's input size: ``crop`` (scale to cover, keeping the
#: aspect, then cut the centre) or ``stretch`` (resize to the size, aspect lost).
RESIZE_MODES = ("crop", "stretch")

#: Pillow's luminance weights in 16-bit fixed point (``RGB`` -> ``L``: ``L = (19595 R +
#: 38470 G + 7471 B + 2**15) >> 16``).
_LUMA_16 = (19595, 38470, 7471)

#: Modes of one grey channel wider than 8 bits: `to_8bit` scales them to mode ``L``.
_WIDE_MODES = ("I", "F")  # and every "I;16..." mode
#: The largest value of a 16-bit pixel, and of a 32-bit signed one.
_MAX_16, _MAX_32 = 65535, 2**31 - 1

#: Serialises `Image.open` (header parsing only, under the GIL anyway) so that the warning
#: filter it runs under is not raced by another thread of this module.
_OPEN_LOCK = threading.Lock()


@contextmanager
def open_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    name: str | os.PathLike[str] | None = None,
    target: tuple[tuple[int, int], str] | None = None,
) -> Iterator[Image.Image]:
    """The decoded first frame of image file `source` (a path, or an upload's bytes), kept open
    for the ``with`` block. With ``target = (size, resize)`` a JPEG is decoded at a reduced
    scale that still holds twice the pixels `resize` will cut to `size` (`decode_scale`).

    Any failure, while opening or in the block (where only Pillow work belongs), is a
    `DataError` naming `name` (default: the path) with the reason in one line.
    """
    encoded = isinstance(source, (bytes, bytearray, memoryview))
    label = str(name if name is not None else "image" if encoded else source)
    if encoded:
        if not source:
            raise DataError(f"{label}: empty, expected an image file's bytes")
        fh: BinaryIO = io.BytesIO(source)
    else:
        fh = _open_file(Path(source), label)
    with fh:
        try:
            with _identify(fh, label) as image:
                if target is not None:
                    decode_scale(image, *target)
                image.load()
                yield image
        except DataError:
            raise
        except Exception as exc:  # decoders raise anything: OSError, RuntimeError, ...
            raise DataError(f"{label}: not a readable image ({_reason(exc)})") from exc


def decode_scale(image: Image.Image, size: tuple[int, int], resize: str) -> None:
    """Ask an opened, not yet loaded JPEG to decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling, Pillow's ``draft``) where the reduced image is still at least twice what
    `fit_image` will resample down to ``size = (H, W)`` on each side: a 384-px photo read at
    96 px decodes at 192 px, 2.7 times faster, then takes the same bilinear resampling. (Decoding
    straight to the target size is faster still but lost detail: a mean error of 3.7 levels
    against the resampled original, 0.4 with the headroom, 0.6 decoding whole.) Other formats,
    and JPEGs under four times the size, are decoded whole."""
    if image.format != "JPEG":
        return
    width, height = image.size  # as stored; EXIF orientation is applied after loading
    sideways = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    seen_w, seen_h = (height, width) if sideways else (width, height)
    target_h, target_w = size
    if resize == "crop":
        scale = max(target_h / seen_h, target_w / seen_w)
        need_w, need_h = math.ceil(seen_w * scale), math.ceil(seen_h * scale)
    else:
        need_w, need_h = target_w, target_h
    if sideways:
        need_w, need_h = need_h, need_w
    image.draft(None, (2 * need_w, 2 * need_h))  # no-op unless the file allows a reduction


def check_image_size(size: Sequence[int]) -> tuple[int, int]:
    """`size` as ``(H, W)`` integers; an `ArgumentError` unless both are at least 1."""
    try:
        height, width = (operator.index(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"image size {size!r}: expected two integers (height, width)") from exc
    if height < 1 or width < 1:
        raise ArgumentError(
            f"image size {height}x{width}: expected a height and width of at least 1"
        )
    return height, width


def check_resize(resize: str) -> str:
    """`resize` if it is one of `RESIZE_MODES`; an `ArgumentError` otherwise."""
    if resize not in RESIZE_MODES:
        raise ArgumentError(f"resize {resize!r}: expected one of {', '.join(RESIZE_MODES)}")
    return resize


def read_image(
    path: str | os.PathLike[str],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    resize: str = "crop",
) -> torch.Tensor:
    """The image file at `path` as uint8 ``[channels, H, W]`` with ``size = (H, W)``, brought
    to that size as `resize` says (`RESIZE_MODES`)."""
    mode, size, resize = _mode(channels), check_image_size(size), check_resize(resize)
    with open_image(path, target=(size, resize)) as image:
        array = _resized(image, mode, size, resize)
    return _to_tensor(array, channels, size, invert)


def read_image_bytes(
    data: bytes,
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    name: str = "image",
    resize: str = "crop",
) -> torch.Tensor:
    """Encoded image bytes (an upload) as uint8 ``[channels, H, W]``, as `read_image` reads a
    file; `name` is used in errors."""
    mode, size, resize = _mode(channels), check_image_size(size), check_resize(resize)
    with open_image(data, name, target=(size, resize)) as image:
        array = _resized(image, mode, size, resize)
    return _to_tensor(array, channels, size, invert)


def read_images(
    paths: Sequence[str | os.PathLike[str]],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    desc: str = "reading images",
    resize: str = "crop",
) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """Read many files (each as `read_image` does); unreadable ones are collected, not raised.

    Returns uint8 images ``[N, C, H, W]`` of the files that could be read, their paths, and
    ``(path, message)`` for each file that could not. A progress bar on stderr shows `desc`.
    """
    _mode(channels)
    size, resize = check_image_size(size), check_resize(resize)
    out = np.empty((len(paths), channels, size[0], size[1]), dtype=np.uint8)
    ok: list[Path] = []
    failures: list[tuple[Path, str]] = []
    for path in progress(paths, desc=desc, unit="image"):
        try:
            out[len(ok)] = read_image(path, channels, size, invert, resize).numpy()
        except DataError as exc:
            failures.append((Path(path), str(exc)))
            continue
        ok.append(Path(path))
    return torch.from_numpy(out[: len(ok)].copy()), ok, failures


def list_image_files(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Image files inside `folder` (by name ending), sorted; with `recursive`, in its
    sub-folders too (see `walk_image_folders`: symlinks are followed, loops are not).
    Hidden files and folders are skipped."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: expected a folder of images, found {_what(d)}")
    if not recursive:
        return _folder_entries(d)[1]
    return sorted(f for _, _, files in walk_image_folders(d) for f in files)


def walk_image_folders(
    folder: str | os.PathLike[str],
) -> Iterator[tuple[Path, list[Path], list[Path]]]:
    """Each folder under `folder`, itself first and parents before children, with its
    sub-folders and its image files (by name ending), both sorted by name.

    Symlinked folders and image files are followed like real ones, and named by the link's
    path; a symlinked folder leading back to a folder it is inside (a loop) is left out, as are
    hidden files and folders (a leading dot, ``__MACOSX``) and broken links. A folder that
    cannot be listed is a `DataError` naming it.
    """
    root = Path(folder)
    yield from _walk(root, (_identity(root),))


def _walk(
    folder: Path, ancestors: tuple[tuple[int, int], ...]
) -> Iterator[tuple[Path, list[Path], list[Path]]]:
    """`walk_image_folders` below `folder`, whose own and parents' identities are `ancestors`."""
    subdirs, files = _folder_entries(folder)
    identities = [_identity(sub) for sub in subdirs]
    kept = [(sub, i) for sub, i in zip(subdirs, identities, strict=True) if i not in ancestors]
    yield folder, [sub for sub, _ in kept], files
    for sub, identity in kept:
        yield from _walk(sub, (*ancestors, identity))


def _folder_entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """The visible sub-folders and image files of `folder` (links followed), each sorted."""
    subdirs: list[Path] = []
    files: list[Path] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if hidden_name(entry.name):
                    continue
                if entry.is_dir():
                    subdirs.append(Path(entry.path))
                elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    files.append(Path(entry.path))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from exc
    return sorted(subdirs), sorted(files)


def _identity(folder: Path) -> tuple[int, int]:
    """The (device, inode) of the folder `folder` leads to, links followed."""
    try:
        st = folder.stat()
    except OSError as exc:
        raise DataError(f"{folder}: cannot read this folder ({exc.strerror or exc})") from exc
    return st.st_dev, st.st_ino


def hidden_name(name: str) -> bool:
    """Whether a file or folder called `name` is skipped when folders are listed."""
    return name.startswith(".") or name == "__MACOSX"


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` with 1 or 3 channels converted to `channels` (grey is repeated;
    colour becomes luminance ``0.299 R + 0.587 G + 0.114 B`` in Pillow's own fixed-point
    arithmetic, so that a tensor converts to the very values a file read in mode ``L`` has)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA_16, dtype=torch.int32).view(1, 3, 1, 1)
        grey = ((images.to(torch.int32) * weights).sum(1, keepdim=True) + 0x8000) >> 16
        return grey.to(torch.uint8)
    raise DataError(f"cannot convert {have}-channel images to {channels} channels")


def class_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """The sub-folders of `folder` (one per class), sorted by name; symlinked ones followed,
    hidden ones skipped."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: expected a folder with one sub-folder per class, found {_what(d)}")
    return _folder_entries(d)[0]


def read_support_folder(
    folder: str | os.PathLike[str],
    channels: int,
    size: tuple[int, int],
    invert: bool = False,
    resize: str = "crop",
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path], list[tuple[Path, str]]]:
    """A folder with one sub-folder of images per class (K-shot support, or a labelled gallery),
    each image read as `read_image` does.

    Returns images uint8 ``[N, C, H, W]``, labels int64 ``[N]`` in ``0..K-1``, the K class names
    (sub-folder names, sorted), the paths read, and ``(path, message)`` for unreadable files.
    A class whose every image is unreadable is dropped (its failures are reported).
    """
    root = Path(folder)
    classes = class_folders(root)
    if not classes:
        loose = list_image_files(root)
        found = f"{len(loose)} loose image files" if loose else "no sub-folders"
        raise DataError(f"{root}: expected one sub-folder of images per class, found {found}")
    paths: list[Path] = []
    owners: list[int] = []
    for k, sub in enumerate(classes):
        files = list_image_files(sub)
        paths += files
        owners += [k] * len(files)
    if not paths:
        raise DataError(f"{root}: {len(classes)} class folders but no image files in them")
    images, ok, failures = read_images(paths, channels, size, invert, resize=resize)
    owner_of = dict(zip(paths, owners, strict=True))
    kept = sorted({owner_of[p] for p in ok})
    new_id = {k: i for i, k in enumerate(kept)}
    labels = torch.tensor([new_id[owner_of[p]] for p in ok], dtype=torch.int64)
    return images, labels, [classes[k].name for k in kept], ok, failures


def _open_file(path: Path, label: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise DataError(f"{label}: no such image file") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{label}: a folder, expected an image file") from exc
    except OSError as exc:
        raise DataError(f"{label}: cannot read ({exc.strerror or exc})") from exc


def _identify(fh: BinaryIO, label: str) -> Image.Image:
    """`Image.open` restricted to `IMAGE_FORMATS`, with huge images and other formats refused.

    Pillow only warns (``DecompressionBombWarning``) about more than ``MAX_IMAGE_PIXELS``
    pixels, and errors at twice that; here both are refused, in one line naming the file, and
    any warning Pillow gives while identifying a file goes into the message, not to stderr.
    """
    with _OPEN_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused just below
        try:
            image = Image.open(fh, formats=IMAGE_FORMATS)
        except UnidentifiedImageError as exc:
            fh.seek(0)
            notes = [str(w.message) for w in caught]
            raise DataError(_unidentified(label, fh.read(16), notes)) from exc
        except Image.DecompressionBombError as exc:
            raise DataError(_too_large(label, _reason(exc))) from exc
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        image.close()
        raise DataError(_too_large(label, f"{width}x{height} pixels"))
    return image


def _too_large(label: str, found: str) -> str:
    return (
        f"{label}: image too large to decode ({found}); at most {Image.MAX_IMAGE_PIXELS:,} "
        "pixels are accepted (PIL.Image.MAX_IMAGE_PIXELS, against decompression bombs)"
    )


def _unidentified(label: str, prefix: bytes, notes: list[str]) -> str:
    """Why Pillow found no accepted format in a file starting with `prefix`."""
    if not prefix:
        return f"{label}: empty file, expected an image"
    found = format_of(prefix)
    if found is not None and found not in IMAGE_FORMATS:
        return f"{label}: an image in format {found}; expected {_ACCEPTED} (convert it to PNG)"
    detail = f": {' '.join(' '.join(notes).split())[:160]}" if notes else ""
    if found is not None:
        return f"{label}: not a readable image (a damaged {found} file{detail})"
    return f"{label}: not a readable image (no known image format{detail}; expected {_ACCEPTED})"


def format_of(prefix: bytes) -> str | None:
    """The Pillow format whose signature begins `prefix` (a file's first 16 bytes), or None.

    Only each format's signature test runs; no decoder sees the data.
    """
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is None:
            continue
        try:
            if accept(prefix):
                return fmt
        except Exception:  # a signature test that cannot cope with this prefix: not it
            continue
    return None


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise DataError(f"expected 1 or 3 image channels, got {channels}")
    return _MODES[channels]


def _resized(image: Image.Image, mode: str, size: tuple[int, int], resize: str) -> np.ndarray:
    """A loaded Pillow image, through `to_8bit`, in `mode` at ``size = (H, W)`` (`fit_image`),
    as uint8 ``[H, W]`` or ``[H, W, 3]``. Only Pillow work: its failures are the image's."""
    converted = to_8bit(image)
    if converted.mode != mode:
        converted = converted.convert(mode)
    return np.asarray(fit_image(converted, size, resize))


def fit_image(image: Image.Image, size: tuple[int, int], resize: str = "crop") -> Image.Image:
    """`image` at ``size = (H, W)``: with ``crop`` its centred region of the target's aspect
    (`crop_box`) resized to it, with ``stretch`` the whole image resized to it; bilinear,
    one resampling. An image already at `size` comes back as it is."""
    height, width = size
    if image.size == (width, height):
        return image
    box = crop_box(image.size, size) if resize == "crop" else None
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box)


def crop_box(
    image_size: tuple[int, int], size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The centred region ``(left, top, right, bottom)`` of an image of ``image_size = (width,
    height)`` (Pillow's order) that has the aspect of ``size = (H, W)``: the whole of the side
    that is short for that aspect, the centre of the other."""
    width, height = image_size
    target_h, target_w = size
    scale = max(target_h / height, target_w / width)  # covers the target on both sides
    # at most the image (1/scale can round a hair past a side: Pillow refuses such a box)
    crop_w, crop_h = min(width, target_w / scale), min(height, target_h / scale)
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return (left, top, left + crop_w, top + crop_h)


def to_8bit(image: Image.Image) -> Image.Image:
    """A loaded image as it is meant to be seen, in mode ``L`` (a grey image of any bit depth,
    or a grey palette) or ``RGB`` (anything else), 8 bits a channel.

    - EXIF orientation is applied (a phone photo stored on its side is turned upright).
    - Transparency (``RGBA``, ``LA``, a palette or grey level marked transparent) is laid onto
      white: black strokes on a transparent background read as black on white paper.
    - Wider grey pixels are scaled, not clipped (see `wide_to_uint8`); colour images with 16
      bits a channel reach here as 8-bit already (Pillow keeps each value's high byte).

    Training (`siamnet.data.sources.folder_source`) and inference read every file through
    this one function, so a file reads the same whichever command reads it. `image` may be
    turned in place.
    """
    ImageOps.exif_transpose(image, in_place=True)  # no copy unless the image is turned
    if image.mode in _WIDE_MODES or image.mode.startswith("I;16"):
        return Image.fromarray(wide_to_uint8(image))
    grey = image.mode in ("1", "L", "LA", "La") or (
        image.mode in ("P", "PA") and _grey_palette(image)
    )
    if image.has_transparency_data:
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    mode = "L" if grey else "RGB"
    return image if image.mode == mode else image.convert(mode)


def wide_to_uint8(image: Image.Image) -> np.ndarray:
    """A grey image of more than 8 bits (Pillow modes ``I;16*``, ``I``, ``F``) as uint8
    ``[H, W]``, scaled to 0..255 by its bit depth:

    - 16-bit (``I;16*``: 16-bit PNG and TIFF; ``I`` from a PGM with a maximum over 255): divided
      by 257, so a 16-bit copy of an 8-bit image (each value times 257) reads exactly as it.
    - 32-bit integers (``I``: integer TIFF): values within 0..255 are taken as they are (8-bit
      data stored wide), within 0..65535 as 16-bit, and any other as the full signed 32-bit
      range (0..2**31-1; negative values read as 0).
    - floating point (``F``: float TIFF): values within 0..1 are multiplied by 255, within
      0..255 taken as they are, and larger ones scaled so that the largest is 255; negative
      values, NaN and infinities read as 0.

    Values are rounded to the nearest integer. Which rule applies to ``I`` and ``F`` depends on
    each image's values, so a data set should not mix ranges.
    """
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(values.max(initial=0.0))
        scale = 1 / 255 if top <= 1 else 1.0 if top <= 255 else top / 255
    elif image.mode == "I" and image.format != "PPM":
        low, top = int(values.min(initial=0)), int(values.max(initial=0))
        wide = low < 0 or top > _MAX_16
        scale = _MAX_32 / 255 if wide else 1.0 if top <= 255 else _MAX_16 / 255
    else:  # 16-bit
        scale = _MAX_16 / 255
    scaled = np.rint(values / scale) if scale != 1.0 else values
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _grey_palette(image: Image.Image) -> bool:
    """Whether every colour of the palette of a ``P`` image is grey."""
    palette = image.getpalette() or []
    rgb = np.asarray(palette[: len(palette) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _to_tensor(
    array: np.ndarray, channels: int, size: tuple[int, int], invert: bool
) -> torch.Tensor:
    """uint8 ``[H, W]`` or ``[H, W, C]`` -> uint8 ``[channels, H, W]`` (one copy)."""
    chw = array.reshape(size[0], size[1], channels).transpose(2, 0, 1).copy()
    if invert:
        np.subtract(255, chw, out=chw)
    return torch.from_numpy(chw)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _what(path: Path) -> str:
    if not path.exists():
        return "nothing there"
    return "a file" if path.is_file() else "something else"
