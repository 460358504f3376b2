"""MNIST-style CSV: a label in the first column, then the H×W pixel values of one image a row.

The seed blog post's ``mnist_train.csv`` has no header; a header row (``label,1x1,1x2,...`` or
``label,pixel0,...``) is recognised and skipped. A ``.csv.gz`` file is decompressed first.

Parsing uses numpy's C reader (``np.loadtxt``) straight into uint8, which rejects anything that
is not an integer in 0..255; only when that fails does a slower, block-wise pass run, to accept
integer-valued floats (``"3.0"``) or to find the first bad cell and name its line and column.
Labels are typed once for the whole file: numbers when every label is a whole number, else text.
"""

from __future__ import annotations

import codecs
import ctypes
import gzip
import math
import os
import sys
import zlib
from collections.abc import Iterator
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path

import numpy as np
import torch

from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import (
    classes_from_values,
    require_two_classes,
    resize_labeled,
)
from siamnet.errors import DataError
from siamnet.images import check_image_size

#: Rows parsed at once by the checking pass (bounds its float64 temporaries).
_BLOCK_ROWS = 2048
#: Lines read and parsed at once.
_CHUNK_LINES = 8192


def load_csv(
    path: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> LabeledImages:
    """Read a CSV of ``label,p1,...,pHW`` rows into uint8 images ``[N, 1, H, W]``.

    Square images are inferred from the column count (785 columns -> 28x28). Other shapes need
    `image_size` ``(H, W)`` with ``H*W`` equal to the pixel columns; for square data a different
    `image_size` resizes every image.
    """
    path = Path(path)
    chunks = _line_chunks(path)
    rows, line_numbers = next(chunks, ([], np.empty(0, np.int64)))
    if not rows:
        raise DataError(f"{path}: empty file; expected rows of a label then pixel values")
    header = rows[0] if _is_header(rows) else None
    if header is not None:
        rows, line_numbers = rows[1:], line_numbers[1:]
        if not rows:
            rows, line_numbers = next(chunks, ([], line_numbers))
        if not rows:
            raise DataError(f"{path}: only a header row, no data rows")
    ncols = rows[0].count(",") + 1
    if ncols < 2:
        raise DataError(
            f"{path}: line {line_numbers[0]} has 1 column; expected a label then pixel values"
        )
    shape, resize_to = _image_shape(path, ncols - 1, image_size)
    first_line = int(line_numbers[0])
    pixel_parts, label_parts, label_lines = [], [], []
    while rows:
        _check_columns(path, rows, line_numbers, header, ncols, first_line)
        pixel_parts.append(_parse_pixels(path, rows, line_numbers, ncols))
        label_parts.append(_label_text(path, rows, line_numbers))
        label_lines.append(line_numbers)
        rows, line_numbers = next(chunks, ([], line_numbers))
    pixels = np.concatenate(pixel_parts) if len(pixel_parts) > 1 else pixel_parts[0]
    del pixel_parts
    release_freed_memory()
    values = _label_values(path, np.concatenate(label_parts), np.concatenate(label_lines))
    labels, classes = classes_from_values(values)
    images = torch.from_numpy(pixels).reshape(len(pixels), 1, *shape)
    data = LabeledImages(images, labels, classes, source=str(path))
    return resize_labeled(require_two_classes(data), resize_to)


# --- lines and header ------------------------------------------------------------------------
def _line_chunks(path: Path) -> Iterator[tuple[list[str], np.ndarray]]:
    """The non-blank lines, ``_CHUNK_LINES`` at a time, with their 1-based line numbers.

    Reading in chunks keeps memory to the parsed uint8 pixels plus one chunk of text, instead
    of the whole file's bytes, its decoded text and a list of every line at once.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    done = 0
    try:
        with opener(path, "rb") as fh:
            while True:
                block = list(islice(fh, _CHUNK_LINES))
                if not block:
                    return
                if done == 0 and block[0].startswith(codecs.BOM_UTF8):
                    block[0] = block[0][len(codecs.BOM_UTF8) :]
                lines = _decode_lines(path, block, done)
                keep = [i for i, line in enumerate(lines) if line.strip()]
                numbers = np.asarray(keep, dtype=np.int64) + done + 1
                done += len(block)
                if keep:
                    yield [lines[i] for i in keep] if len(keep) != len(lines) else lines, numbers
    except EOFError as exc:
        raise DataError(
            f"{path}: truncated gzip file (it ends before the end of the compressed data); "
            "download or copy it again"
        ) from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _decode_lines(path: Path, block: list[bytes], done: int) -> list[str]:
    """UTF-8 text of each line, without its line ending; an error names a line that is not."""
    try:
        return b"".join(block).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        for i, line in enumerate(block):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: line {done + i + 1} is not UTF-8 text; expected a CSV file"
                ) from exc
        raise


def release_freed_memory() -> None:
    """Hand the heap memory freed by parsing back to the operating system (glibc only).

    Parsing leaves tens of thousands of freed line strings in the C heap; glibc keeps such
    memory for reuse, so the process would carry ~100 MB more than it holds for the rest of
    its life (training included). Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _is_header(lines: list[str]) -> bool:
    """Whether the first line names the columns rather than holding an example.

    A header has named pixel columns (``1x1``, ``pixel0``); or, with numbered pixel columns, a
    named first column above rows whose labels are numbers.
    """
    cells = [c.strip().strip("\"'") for c in lines[0].split(",")]
    pixel_cells = [c for c in cells[1:] if c]
    if pixel_cells and sum(not _is_number(c) for c in pixel_cells) * 2 > len(pixel_cells):
        return True
    if len(lines) > 1 and not _is_number(cells[0]):
        next_label = lines[1].split(",", 1)[0].strip().strip("\"'")
        return _is_number(next_label)
    return False


def _is_number(text: str) -> bool:
    """Whether `text` is a number as numpy's reader takes it (Python's ``float`` also takes
    ``"1_0"``, which numpy does not)."""
    if "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_columns(
    path: Path,
    rows: list[str],
    line_numbers: np.ndarray,
    header: str | None,
    ncols: int,
    first_line: int,
) -> None:
    """Every row (and the header) has `ncols` cells."""
    commas = np.fromiter(map(str.count, rows, repeat(",")), np.int64, len(rows))
    bad = np.flatnonzero(commas != ncols - 1)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: line {int(line_numbers[i])} has {int(commas[i]) + 1} columns; expected "
            f"{ncols} like line {first_line} (a label then {ncols - 1} pixel values)"
        )
    if header is not None and header.count(",") != ncols - 1:
        raise DataError(
            f"{path}: the header (line 1) has {header.count(',') + 1} columns but the rows have "
            f"{ncols}"
        )


def _image_shape(
    path: Path, num_pixels: int, image_size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(H, W)`` of the stored images, and the size to resize them to afterwards (or None)."""
    wanted = None if image_size is None else check_image_size(image_size)
    if wanted is not None and wanted[0] * wanted[1] == num_pixels:
        return wanted, None
    side = math.isqrt(num_pixels)
    if side * side == num_pixels:
        return (side, side), wanted
    if wanted is None:
        raise DataError(
            f"{path}: {num_pixels} pixel columns do not make a square image; give the image size "
            f"(H, W) with H*W = {num_pixels}"
        )
    raise DataError(
        f"{path}: image size {wanted[0]}x{wanted[1]} needs {wanted[0] * wanted[1]} pixel columns "
        f"but the rows have {num_pixels}"
    )


# --- values ------------------------------------------------------------------------------------
def _parse_pixels(path: Path, rows: list[str], line_numbers: np.ndarray, ncols: int) -> np.ndarray:
    """uint8 ``[R, ncols-1]``: the pixel columns, each an integer in 0..255."""
    try:
        return np.loadtxt(
            rows, delimiter=",", dtype=np.uint8, comments=None, usecols=range(1, ncols), ndmin=2
        )
    except ValueError:
        pass  # a cell that is not a plain integer in 0..255: find it, or accept "3.0"
    out = np.empty((len(rows), ncols - 1), dtype=np.uint8)
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = rows[start : start + _BLOCK_ROWS]
        values = _parse_float_block(path, block, line_numbers[start:], ncols)
        _check_pixel_values(path, values, line_numbers[start:])
        out[start : start + len(block)] = values
    return out


def _parse_float_block(
    path: Path, block: list[str], line_numbers: np.ndarray, ncols: int
) -> np.ndarray:
    """float64 ``[B, ncols-1]``; a cell that is no number at all is an error naming it."""
    try:
        return np.loadtxt(
            block,
            delimiter=",",
            dtype=np.float64,
            comments=None,
            usecols=range(1, ncols),
            ndmin=2,
        )
    except ValueError:
        pass
    for i, row in enumerate(block):
        for j, cell in enumerate(row.split(",")[1:], start=2):
            where = f"{path}: line {int(line_numbers[i])}, column {j}"
            if not cell.strip():
                raise DataError(f"{where}: empty cell; expected a pixel value 0..255")
            if not _is_number(cell):
                raise DataError(f"{where}: {cell.strip()!r} is not a number; expected 0..255")
    raise DataError(f"{path}: cannot read the pixel values as numbers")


def _check_pixel_values(path: Path, values: np.ndarray, line_numbers: np.ndarray) -> None:
    """Every value of float ``[B, P]`` is a whole number in 0..255, else an error naming it."""
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 255) & (values == np.rint(values)))
    if not bad.any():
        return
    i, j = (int(v) for v in np.argwhere(bad)[0])
    value = float(values[i, j])
    found = "NaN" if math.isnan(value) else f"{value:.12g}"
    kind = "not a whole number" if 0 <= value <= 255 else "outside 0..255"
    raise DataError(
        f"{path}: line {int(line_numbers[i])}, column {j + 2}: pixel value {found} is {kind}; "
        "expected an integer 0..255"
    )


def _label_text(path: Path, rows: list[str], line_numbers: np.ndarray) -> np.ndarray:
    """The first column ``[R]`` as text, quotes and spaces stripped; an empty one is an error."""
    first_cells = map(itemgetter(0), map(str.split, rows, repeat(","), repeat(1)))
    text = np.char.strip(np.char.strip(np.array(list(first_cells))), "\"'")
    empty = np.flatnonzero(np.char.str_len(text) == 0)
    if empty.size:
        raise DataError(
            f"{path}: line {int(line_numbers[int(empty[0])])}, column 1: empty label; expected "
            "a class label"
        )
    return text


def _label_values(path: Path, text: np.ndarray, line_numbers: np.ndarray) -> np.ndarray:
    """The label column ``[N]`` of the whole file, typed once for all of it: int64 when every
    label is a whole number (``"3"`` and ``"3.0"`` are then one class, ``"3"``), else the text
    as written (``"3.0"`` stays ``"3.0"`` next to ``"cat"``), wherever in the file a label is."""
    try:
        numbers = text.astype(np.float64)
    except ValueError:
        return text
    if np.isnan(numbers).any():
        i = int(np.flatnonzero(np.isnan(numbers))[0])
        raise DataError(f"{path}: line {int(line_numbers[i])}, column 1: label is NaN")
    if (numbers == np.rint(numbers)).all() and np.abs(numbers).max() < 2**53:
        return numbers.astype(np.int64)
    return text
