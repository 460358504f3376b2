"""The built-in ``glyphs`` set: Omniglot-like characters rendered offline from matplotlib's fonts.

Every character of an alphabet is a class, every alphabet a group, like Omniglot's: alphabets
are split into ``background`` (training) and ``evaluation`` alphabets (classes never seen in
training). Each character has `EXAMPLES` examples, 28×28 uint8, light strokes on a dark ground
like the built-in digits: example ``k`` draws the character in the ``k``-th of its alphabet's
font faces (DejaVu Sans, Sans Mono and Serif in their weights and obliques, STIX, Computer
Modern; faces cycled when there are fewer than `EXAMPLES`), moved by a seeded hand-like
distortion (scale, aspect, rotation, shear, shift and a smooth elastic warp). Only characters
that every face of their alphabet draws are kept, and a character that looks like one already
kept (Latin ``A`` and Greek ``Α``, ``o`` and ``O``) is left out, so no two classes share a shape.

The fonts are the files matplotlib installs (``mpl-data/fonts/ttf``), so the set needs no
network and no font package. It is rendered on first use (a few seconds) and cached as
``glyphs-<key>.npz`` in the data cache (``$SIAMNET_DATA``, else ``~/.cache/siamnet/glyphs``,
see `siamnet.data.fetch.cache_dir`), with its sha256 beside it in ``.npz.sha256``; the key
hashes the recipe and the font files, so other fonts give another file. A cached file whose
checksum does not match is rendered again, never used. Rendering is deterministic: the same
fonts give the same bytes (a seeded NumPy generator, batched warps on the CPU, a zip archive
with fixed dates). A missing or unreadable font file is a one-line `DataError` naming it.

``bench/make_glyphs.py`` builds the larger bench set from the system's fonts (35 alphabets).
"""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from siamnet.data.dataset import Dataset
from siamnet.data.labeled import LabeledImages
from siamnet.data.sources import resize_labeled
from siamnet.errors import DataError
from siamnet.images import check_image_size

NAME = "glyphs"
#: Bumped whenever the drawing changes, so that a set cached by an older recipe is not used.
RECIPE_VERSION = 1
SEED = 0
EXAMPLES = 20
SIZE = 28
#: Characters kept at most per alphabet (a seeded choice, in code point order).
MAX_CHARS = 40
#: Pixels per em of the first rendering, the side of the canvas a glyph is fitted into, and
#: the length its larger side is scaled to there.
EM = 64
CANVAS = 64
FIT = 52
#: Two characters whose shapes in `REFERENCE_FACE` (24×24, centred) correlate at least this
#: much are one (``O`` and ``o``, Latin ``A`` and Greek ``Α``): the later one is left out.
SAME_SHAPE = 0.9
#: The environment variable naming another folder to take the font files from.
FONTS_ENV = "SIAMNET_GLYPH_FONTS"

#: Font faces by family: the files matplotlib installs in ``mpl-data/fonts/ttf``.
FAMILIES: dict[str, tuple[str, ...]] = {
    "DejaVu Sans": (
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSans-BoldOblique.ttf",
    ),
    "DejaVu Serif": (
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
        "DejaVuSerif-Italic.ttf",
        "DejaVuSerif-BoldItalic.ttf",
    ),
    "DejaVu Sans Mono": (
        "DejaVuSansMono.ttf",
        "DejaVuSansMono-Bold.ttf",
        "DejaVuSansMono-Oblique.ttf",
        "DejaVuSansMono-BoldOblique.ttf",
    ),
    "STIX": (
        "STIXGeneral.ttf",
        "STIXGeneralBol.ttf",
        "STIXGeneralItalic.ttf",
        "STIXGeneralBolIta.ttf",
    ),
    "Computer Modern": ("cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf"),
}
#: The face every alphabet has, in which shapes are compared.
REFERENCE_FACE = "DejaVuSans.ttf"


def _faces(*families: tuple[str, ...]) -> tuple[str, ...]:
    """The faces of `families` taken in turn (regular of each, then bold of each, ...), so that
    the first examples of a character already come from every family."""
    longest = max(len(f) for f in families)
    return tuple(f[i] for i in range(longest) for f in families if i < len(f))


_SANS, _SERIF, _MONO, _STIX, _CM = FAMILIES.values()
_UPRIGHT_SANS = _SANS[:2]  # the obliques draw no Arabic
_UPRIGHT_MONO = _MONO[:2]


@dataclass(frozen=True)
class Alphabet:
    """One alphabet: its split, code point ranges (inclusive), the font faces that draw it
    and the Unicode categories kept (first letter: ``L`` letters, ``S`` symbols)."""

    name: str
    split: str
    ranges: tuple[tuple[int, int], ...]
    faces: tuple[str, ...]
    categories: str = "L"


#: The alphabets in order of precedence: a character whose shape an earlier one has is left out.
ALPHABETS: tuple[Alphabet, ...] = (
    Alphabet(
        "Latin",
        "background",
        ((0x41, 0x5A), (0x61, 0x7A)),
        _faces(_SANS, _SERIF, _STIX, _CM, _MONO),
    ),
    Alphabet(
        "Greek", "evaluation", ((0x391, 0x3A9), (0x3B1, 0x3C9)), _faces(_SANS, _SERIF, _STIX, _MONO)
    ),
    Alphabet("Cyrillic", "background", ((0x410, 0x44F),), _faces(_SANS, _SERIF, _STIX, _MONO)),
    Alphabet(
        "Armenian", "evaluation", ((0x531, 0x556), (0x561, 0x587)), _faces(_SANS, _SERIF, _MONO)
    ),
    Alphabet("Georgian", "evaluation", ((0x10D0, 0x10FA),), _faces(_SANS, _SERIF, _MONO)),
    Alphabet("Asomtavruli", "background", ((0x10A0, 0x10C5),), _faces(_SANS, _SERIF)),
    Alphabet("Hebrew", "background", ((0x5D0, 0x5EA),), _SANS),
    Alphabet("Arabic", "background", ((0x621, 0x64A),), _faces(_UPRIGHT_SANS, _UPRIGHT_MONO)),
    Alphabet("Lao", "evaluation", ((0xE81, 0xEAE),), _faces(_SANS, _MONO)),
    Alphabet("Canadian_Syllabics", "background", ((0x1401, 0x166C),), _SANS),
    Alphabet("IPA", "evaluation", ((0x250, 0x2AF),), _faces(_SANS, _SERIF, _STIX, _MONO)),
    Alphabet(
        "Arrows", "background", ((0x2190, 0x21FF),), _faces(_SANS, _SERIF, _STIX[:2], _MONO), "S"
    ),
    Alphabet(
        "Math_Operators", "evaluation", ((0x2200, 0x22FF),), _faces(_SANS, _STIX[:2], _MONO), "S"
    ),
    Alphabet("Supplemental_Math", "background", ((0x2A00, 0x2AFF),), _faces(_SANS, _STIX[:2]), "S"),
    Alphabet("Technical", "background", ((0x2300, 0x23FF),), _faces(_SANS, _SERIF, _MONO), "S"),
    Alphabet("Letterlike", "background", ((0x2100, 0x214F),), _faces(_SANS, _STIX[:1]), "LS"),
    Alphabet("Currency", "background", ((0x20A0, 0x20CF),), _faces(_SANS, _MONO), "S"),
)

SPLIT_ROLES = {
    "background": "training (the background alphabets)",
    "evaluation": "testing (the evaluation alphabets, never seen in training)",
}


def font_dir() -> Path:
    """The folder the fonts are read from: ``$SIAMNET_GLYPH_FONTS``, else matplotlib's own
    ``mpl-data/fonts/ttf``."""
    override = os.environ.get(FONTS_ENV)
    if override:
        return Path(os.path.expanduser(override))
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def load_glyphs(
    image_size: tuple[int, int] | None = None, fonts: str | os.PathLike[str] | None = None
) -> Dataset:
    """`Dataset` ``glyphs`` with splits ``background`` (training) and ``evaluation`` (other
    alphabets), from the cache or rendered from the font files in `fonts` (default
    `font_dir`); `image_size` ``(H, W)`` resizes every image."""
    size = None if image_size is None else check_image_size(image_size)
    arrays = glyph_arrays(fonts)
    images = torch.from_numpy(arrays["images"])
    labels = torch.from_numpy(arrays["labels"])
    classes = [str(c) for c in arrays["classes"]]
    notes = (
        f"rendered from matplotlib's fonts: {EXAMPLES} examples per character, each in one "
        "font face with a seeded distortion",
    )
    splits: dict[str, LabeledImages | None] = {}
    for index, split in enumerate(SPLIT_ROLES):
        ids = np.flatnonzero(arrays["class_split"] == index)
        remap = torch.full((len(classes),), -1, dtype=torch.int64)
        remap[torch.from_numpy(ids)] = torch.arange(len(ids))
        keep = remap[labels] >= 0
        names = [classes[i] for i in ids]
        part = LabeledImages(
            images[keep].contiguous(),
            remap[labels[keep]],
            names,
            [name.split("/")[0] for name in names],
            source=NAME,
            notes=notes,
        )
        splits[split] = resize_labeled(part, size)
    return Dataset(NAME, splits, dict(SPLIT_ROLES))


# --- the cache ---------------------------------------------------------------------------------
def glyph_arrays(fonts: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the set (see `render_glyphs`): from the cache when the file's sha256 is
    the one recorded beside it, else rendered and cached (a damaged file is replaced)."""
    from siamnet.data.fetch import cache_dir, file_digest
    from siamnet.fileio import atomic_write_files
    from siamnet.temps import remove_stale_temps

    paths = font_paths(Path(fonts) if fonts is not None else font_dir())
    path = cache_dir(NAME) / f"{NAME}-{cache_key(paths)}.npz"
    sums = path.with_name(path.name + ".sha256")
    if path.is_file() and sums.is_file():
        try:
            recorded = sums.read_text(encoding="ascii").split()[0]
            if file_digest(path, "sha256") == recorded:
                return read_archive(path)
        except (OSError, IndexError, ValueError, zipfile.BadZipFile):
            pass  # unreadable or damaged: rendered again
    arrays = render_glyphs(paths)
    data = archive_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    if path.parent.is_dir():
        remove_stale_temps(path.parent)
    atomic_write_files(
        [(path, data), (sums, f"{digest}  {path.name}\n".encode("ascii"))], remove_first=[sums]
    )
    return arrays


def cache_key(paths: dict[str, Path]) -> str:
    """16 hex digits naming one rendering: the recipe, its settings and every font's bytes."""
    h = hashlib.sha256()
    settings = (RECIPE_VERSION, SEED, EXAMPLES, SIZE, MAX_CHARS, EM, CANVAS, FIT, SAME_SHAPE)
    h.update(repr((settings, ALPHABETS)).encode())
    for name, path in sorted(paths.items()):
        h.update(name.encode())
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            raise DataError(f"{NAME}: font {name} cannot be read ({path}: {exc})") from exc
    return h.hexdigest()[:16]


def archive_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (an uncompressed zip of ``.npy`` files) of `arrays`, every member dated
    1980-01-01, so that equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.save(member, arrays[name], allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def read_archive(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an archive `archive_bytes` wrote."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def font_paths(folder: Path) -> dict[str, Path]:
    """Every font file the alphabets use, by name; a `DataError` naming the first missing."""
    paths = {}
    for name in sorted({face for alphabet in ALPHABETS for face in alphabet.faces}):
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{NAME}: font {name} not found in {folder} (the glyphs are drawn from the "
                f"fonts matplotlib installs; reinstall matplotlib or set {FONTS_ENV} to a "
                "folder holding them)"
            )
        paths[name] = path
    return paths


# --- rendering ---------------------------------------------------------------------------------
def render_glyphs(paths: dict[str, Path]) -> dict[str, np.ndarray]:
    """Draw the whole set from the font files `paths` (file name -> path): ``images`` uint8
    ``[N, 1, 28, 28]``, ``labels`` int64 ``[N]`` (`EXAMPLES` per class, in class order), and
    per class its name ``classes`` (``"Greek/U+03B1"``), its character ``chars`` and
    ``class_split`` (uint8, 0 background, 1 evaluation)."""
    faces = {name: open_face(name, path) for name, path in paths.items()}
    bases: list[np.ndarray] = []  # one fitted glyph per (character, face) used
    base_of: list[int] = []  # the glyph of each example
    classes, chars, class_split = [], [], []
    for alphabet, characters in choose_characters(faces):
        cycle = [alphabet.faces[k % len(alphabet.faces)] for k in range(EXAMPLES)]
        used = list(dict.fromkeys(cycle))
        for ch in characters:
            first = len(bases)
            bases.extend(glyph(faces[face], ch) for face in used)
            base_of.extend(first + used.index(face) for face in cycle)
            classes.append(f"{alphabet.name}/U+{ord(ch):04X}")
            chars.append(ch)
            class_split.append(list(SPLIT_ROLES).index(alphabet.split))
    images = distort(np.stack(bases), np.asarray(base_of), SEED)
    return {
        "images": images[:, None],
        "labels": np.repeat(np.arange(len(classes), dtype=np.int64), EXAMPLES),
        "classes": np.asarray(classes),
        "chars": np.asarray(chars),
        "class_split": np.asarray(class_split, dtype=np.uint8),
    }


def open_face(name: str, path: Path) -> Any:
    """The font file `path` at `EM` pixels per em (Pillow, basic layout: no shaping)."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(path), EM, layout_engine=ImageFont.Layout.BASIC)
    except OSError as exc:
        raise DataError(f"{NAME}: font {name} cannot be read ({path}: {exc})") from exc


def covered(name: str, path: Path) -> set[int]:
    """The code points the font file `path` maps to a glyph."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(path), lazy=True) as font:
            return set(font.getBestCmap() or {})
    except (OSError, TTLibError, AssertionError, KeyError) as exc:
        raise DataError(f"{NAME}: font {name} cannot be read ({path}: {exc})") from exc


def choose_characters(faces: dict[str, Any]) -> list[tuple[Alphabet, list[str]]]:
    """Each alphabet's characters: of its categories, drawn by every one of its faces, with
    ink, unlike every character kept before (`SAME_SHAPE`), at most `MAX_CHARS` (seeded)."""
    cmaps = {name: covered(name, Path(face.path)) for name, face in faces.items()}
    candidates = [
        (a, chr(code))
        for a, alphabet in enumerate(ALPHABETS)
        for lo, hi in alphabet.ranges
        for code in range(lo, hi + 1)
        if unicodedata.category(chr(code))[0] in alphabet.categories
        and all(code in cmaps[face] for face in alphabet.faces)
    ]
    shapes = shape_vectors(np.stack([glyph(faces[REFERENCE_FACE], ch) for _, ch in candidates]))
    similar = shapes @ shapes.T  # [C, C] correlations
    inked = np.abs(shapes).sum(1) > 0
    kept: list[int] = []
    for i in range(len(candidates)):
        if inked[i] and (not kept or float(similar[i, kept].max()) < SAME_SHAPE):
            kept.append(i)
    rng = np.random.default_rng(SEED)
    out = []
    for a, alphabet in enumerate(ALPHABETS):
        chars = [candidates[i][1] for i in kept if candidates[i][0] == a]
        if len(chars) > MAX_CHARS:
            pick = np.sort(rng.choice(len(chars), size=MAX_CHARS, replace=False))
            chars = [chars[i] for i in pick]
        out.append((alphabet, chars))
    return out


def shape_vectors(images: np.ndarray) -> np.ndarray:
    """float64 ``[G, 576]``: each glyph of `images` ``[G, H, W]`` at 24×24, less its mean and
    of unit length (zero for a glyph without ink), so that dot products are correlations."""
    small = F.interpolate(torch.from_numpy(images)[:, None], size=(24, 24), mode="area")
    v = small.flatten(1).double().numpy()
    v = v - v.mean(1, keepdims=True)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norm > 1e-9, v / np.maximum(norm, 1e-9), 0.0)


def glyph(face: Any, ch: str) -> np.ndarray:
    """float32 ``[CANVAS, CANVAS]`` in 0..1, white on black: `ch` drawn in `face`, its ink
    cropped, scaled so that its larger side is `FIT` pixels, and centred; all zero when the
    face draws no ink."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = face.getbbox(ch)
    canvas = Image.new("L", (max(right - left, 1) + 4, max(bottom - top, 1) + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), ch, fill=255, font=face)
    box = canvas.getbbox()
    if box is None:
        return np.zeros((CANVAS, CANVAS), np.float32)
    ink = canvas.crop(box)
    scale = FIT / max(ink.size)
    size = (max(1, round(ink.size[0] * scale)), max(1, round(ink.size[1] * scale)))
    ink = ink.resize(size, Image.Resampling.LANCZOS)
    out = Image.new("L", (CANVAS, CANVAS), 0)
    out.paste(ink, ((CANVAS - size[0]) // 2, (CANVAS - size[1]) // 2))
    return np.asarray(out, dtype=np.float32) / 255.0


def distort(bases: np.ndarray, base_of: np.ndarray, seed: int) -> np.ndarray:
    """uint8 ``[N, 28, 28]``: example ``i`` is glyph ``bases[base_of[i]]`` (float
    ``[G, CANVAS, CANVAS]``) scaled, squeezed, sheared, rotated, shifted and warped (a 5×5 grid
    of nodes moved at random, bilinear between them) by its own seeded draw, sampled at 56×56
    and averaged down to 28×28. The sampling grids are computed in float64 and rounded to
    float32, so that they do not depend on how many threads compute them."""
    rng = np.random.default_rng(seed)
    n = len(base_of)
    scale = rng.uniform(0.65, 1.05, n)
    aspect = np.exp(rng.uniform(-0.15, 0.15, n))
    angle = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-0.14, 0.14, (n, 2))  # in -1..1 image coordinates
    nodes = rng.normal(0.0, 0.035, (n, 5, 5, 2))
    # glyph point -> output point: rotate · shear · stretch; sampling needs its inverse
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.empty((n, 2, 2))
    forward[:, 0, 0] = cos * scale * aspect
    forward[:, 0, 1] = (cos * shear - sin) * scale / aspect
    forward[:, 1, 0] = sin * scale * aspect
    forward[:, 1, 1] = (sin * shear + cos) * scale / aspect
    inverse = np.linalg.inv(forward)  # [n, 2, 2]
    # Where each node of a 5×5 grid over the output samples the glyph; every output pixel
    # samples at the bilinear blend of its four nodes (exact for the affine part).
    u = np.linspace(-1.0, 1.0, 5)
    grid_nodes = np.stack(np.meshgrid(u, u, indexing="xy"), -1)  # [5, 5, (x, y)]
    moved = grid_nodes + nodes - shift[:, None, None, :]  # [n, 5, 5, 2]
    sample_at = torch.from_numpy(np.einsum("nij,nabj->nabi", inverse, moved))
    spread = _linear_weights(5, 2 * SIZE)  # [56, 5]
    source = torch.from_numpy(bases)[:, None]  # [G, 1, CANVAS, CANVAS]
    out = np.empty((n, SIZE, SIZE), np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        grid = torch.einsum("ha,nabc,wb->nhwc", spread, sample_at[sl], spread).float()
        drawn = F.grid_sample(
            source[torch.from_numpy(base_of[sl])], grid, mode="bilinear", align_corners=False
        )
        small = F.avg_pool2d(drawn, 2)[:, 0]
        out[sl] = (small * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


#: Examples distorted at once (bounds the float64 grids: 1024 × 56 × 56 × 2 × 8 bytes, 51 MB).
_CHUNK = 1024


def _linear_weights(nodes: int, side: int) -> torch.Tensor:
    """float64 ``[side, nodes]``: the weights of `nodes` evenly spaced nodes (the first and
    last on the edges) at each of `side` pixel centres, linear between neighbours."""
    x = (torch.arange(side, dtype=torch.float64) + 0.5) / side * (nodes - 1)
    return (1.0 - (x[:, None] - torch.arange(nodes, dtype=torch.float64)).abs()).clamp_min(0)
