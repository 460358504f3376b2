"""``.npz`` files: arrays ``images`` and ``labels``, optionally ``classes`` and ``groups``.

``images`` may be ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]`` with C in 1, 3; uint8 (or
another integer type with values 0..255), or float in 0..1 or 0..255. ``labels`` is ``[N]``
integers or strings. With ``classes`` (K names), integer labels index it (``0..K-1``) and string
labels must be among its names; ``groups`` has one name per class. Files are read with
``allow_pickle=False``: an ``.npz`` never runs code.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import torch

from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import classes_from_values, resize_labeled
from siamnet.errors import DataError
from siamnet.fileio import atomic_write
from siamnet.images import check_image_size

REQUIRED = ("images", "labels")


def load_npz(
    path: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> LabeledImages:
    """Read `path` into uint8 images ``[N, C, H, W]``; `image_size` ``(H, W)`` resizes them."""
    path = Path(path)
    size = None if image_size is None else check_image_size(image_size)
    arrays = _read_arrays(path)
    images, notes = _images(path, arrays["images"])
    labels, classes, groups = _labels(path, arrays, len(images))
    data = LabeledImages(images, labels, classes, groups, source=str(path), notes=notes)
    return resize_labeled(data, size)


def save_npz(data: LabeledImages, path: str | os.PathLike[str]) -> Path:
    """Write `data` to `path` (compressed, atomically) so that `load_npz` gives it back exactly.

    Arrays: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``, ``classes`` ``[K]``
    and, when present, ``groups`` ``[K]``.
    """
    path = Path(path)
    arrays = {
        "images": data.images.contiguous().numpy(),
        "labels": data.labels.numpy(),
        "classes": np.array(data.classes, dtype=np.str_),
    }
    if data.groups is not None:
        arrays["groups"] = np.array(data.groups, dtype=np.str_)
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


# --- reading -----------------------------------------------------------------------------------
def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of `path` by name; `images` and `labels` must be there.

    Each member's ``.npy`` header is checked before its data is read: object arrays (which
    need pickle) are refused, and the bytes its shape and type promise must be what the member
    holds, so that a damaged or forged header never allocates more than the file holds.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (not a zip archive of .npy arrays)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {_array_name(i.filename): i for i in zf.infolist() if not i.is_dir()}
            missing = [name for name in REQUIRED if name not in members]
            if missing:
                has = ", ".join(members) or "no arrays"
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; the file has {has} "
                    "(expected images and labels, optionally classes and groups)"
                )
            wanted = [name for name in (*REQUIRED, "classes", "groups") if name in members]
            return {name: _read_member(path, zf, members[name], name) for name in wanted}
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"{path}: damaged .npz file ({' '.join(str(exc).split())})") from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or an unknown compression
        raise DataError(f"{path}: cannot read this .npz file ({exc})") from exc


def _array_name(member: str) -> str:
    return member.removesuffix(".npy")


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One ``.npy`` member, its header checked against its size first (see `_read_arrays`)."""
    with zf.open(info) as fh:
        try:
            version = npy_format.read_magic(fh)
        except ValueError as exc:
            raise DataError(f"{path}: {info.filename} is not a .npy array") from exc
        if version in ((1, 0), (2, 0)):
            read_header = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
            if dtype.hasobject:
                raise DataError(
                    f"{path}: array {name} holds Python objects (dtype {dtype}), which cannot "
                    "be read without pickle, never allowed here; save it as numbers or strings"
                )
            promised = math.prod(int(d) for d in shape) * dtype.itemsize
            held = info.file_size - fh.tell()
            if promised != held:
                dims = "x".join(str(int(d)) for d in shape) or "scalar"
                raise DataError(
                    f"{path}: array {name} is damaged: its header promises {dims} values of "
                    f"{dtype} ({promised:,} bytes) but it holds {held:,} bytes"
                )
    with zf.open(info) as fh:
        return npy_format.read_array(fh, allow_pickle=False)


def _images(path: Path, array: np.ndarray) -> tuple[torch.Tensor, tuple[str, ...]]:
    """uint8 ``[N, C, H, W]`` from any accepted layout and type, and notes on conversions."""
    nchw = _to_nchw(path, array)
    n, _, height, width = (int(d) for d in nchw.shape)
    if n == 0:
        raise DataError(
            f"{path}: images have shape {list(array.shape)}, no images; expected at least one"
        )
    if height == 0 or width == 0:
        raise DataError(
            f"{path}: images have shape {list(array.shape)}, {height}x{width} pixels each; "
            "expected a height and width of at least 1"
        )
    if nchw.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(nchw)), ()
    if nchw.dtype == np.bool_:
        return torch.from_numpy(nchw.astype(np.uint8) * 255), ("scaled boolean images to 0/255",)
    if np.issubdtype(nchw.dtype, np.integer):
        lo, hi = int(nchw.min()), int(nchw.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{path}: images hold integers {lo}..{hi}; expected pixel values 0..255"
            )
        return torch.from_numpy(nchw.astype(np.uint8)), ()
    if np.issubdtype(nchw.dtype, np.floating):
        return _float_images(path, nchw)
    raise DataError(f"{path}: images have type {nchw.dtype}; expected uint8 or float pixels")


def _to_nchw(path: Path, array: np.ndarray) -> np.ndarray:
    shape = list(array.shape)
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and shape[1] in (1, 3):
        return array
    if array.ndim == 4 and shape[3] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    raise DataError(
        f"{path}: images have shape {shape}; expected [N, H, W], [N, C, H, W] or [N, H, W, C] "
        "with C = 1 or 3"
    )


def _float_images(path: Path, array: np.ndarray) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Floats in 0..1 (scaled by 255) or 0..255, rounded to uint8."""
    if not np.isfinite(array).all():
        raise DataError(f"{path}: images hold NaN or infinite values; expected 0..1 or 0..255")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{path}: float images range {lo:g}..{hi:g}; expected 0..1 or 0..255")
    scale = 255.0 if hi <= 1.0 else 1.0
    pixels = np.rint(array.astype(np.float32) * scale).astype(np.uint8)
    what = "0..1 scaled to 0..255" if scale != 1.0 else "0..255 rounded"
    return torch.from_numpy(pixels), (f"float images ({what}) converted to uint8",)


def _labels(
    path: Path, arrays: dict[str, np.ndarray], n: int
) -> tuple[torch.Tensor, list[str], list[str] | None]:
    """Labels ``0..K-1`` (int64 ``[N]``), the K class names and the groups (or None)."""
    values = arrays["labels"]
    if values.ndim != 1 or len(values) != n:
        raise DataError(
            f"{path}: labels have shape {list(values.shape)} but there are {n} images; expected "
            f"[{n}], one label per image"
        )
    if values.dtype.kind not in "biufUS":
        raise DataError(f"{path}: labels have type {values.dtype}; expected integers or strings")
    if np.issubdtype(values.dtype, np.floating):
        whole = np.isfinite(values).all() and (values == np.rint(values)).all()
        if not (whole and np.abs(values).max() < 2**53):
            raise DataError(
                f"{path}: labels hold NaN, fractional or huge values; expected integers"
            )
        values = values.astype(np.int64)
    if "classes" in arrays:
        labels, classes = _labels_with_names(path, values, arrays["classes"])
    else:
        labels, classes = classes_from_values(values)
    groups = None
    if "groups" in arrays:
        groups = [_text(g) for g in arrays["groups"].reshape(-1).tolist()]
        if len(groups) != len(classes):
            raise DataError(
                f"{path}: {len(groups)} groups but {len(classes)} classes; expected one group "
                "name per class"
            )
    return labels, classes, groups


def _labels_with_names(
    path: Path, values: np.ndarray, names: np.ndarray
) -> tuple[torch.Tensor, list[str]]:
    """Labels from integer indices into `names`, or from strings found among `names`."""
    classes = [_text(c) for c in names.reshape(-1).tolist()]
    repeated = sorted(c for c, count in Counter(classes).items() if count > 1)
    if repeated:
        raise DataError(
            f"{path}: class name {repeated[0]!r} appears more than once in classes; expected "
            f"{len(classes)} different names"
        )
    if values.dtype == np.bool_:
        values = values.astype(np.int64)
    if np.issubdtype(values.dtype, np.integer):
        if values.min() < 0 or values.max() >= len(classes):
            raise DataError(
                f"{path}: labels range {int(values.min())}..{int(values.max())} but there are "
                f"{len(classes)} class names; expected labels 0..{len(classes) - 1}"
            )
        return torch.from_numpy(values.astype(np.int64)), classes
    lookup = {name: i for i, name in enumerate(classes)}
    text = values.astype(np.str_)
    unique, inverse = np.unique(text, return_inverse=True)
    unknown = [u for u in unique.tolist() if u not in lookup]
    if unknown:
        raise DataError(f"{path}: label {unknown[0]!r} is not among the {len(classes)} class names")
    ids = np.array([lookup[u] for u in unique.tolist()], dtype=np.int64)
    return torch.from_numpy(ids[inverse.reshape(-1)]), classes


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
