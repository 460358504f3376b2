"""An Omniglot-layout data set of real characters, rendered from installed fonts.

Omniglot (Lake et al.) holds 1,623 characters of 50 alphabets, each drawn by 20 people, split
into 30 *background* alphabets for training and 20 *evaluation* alphabets for testing. It cannot
be downloaded everywhere; this script builds a stand-in with the same layout and the same
questions (one-shot learning of characters from alphabets never seen in training, and the
within-alphabet protocol) from the letters of about thirty real writing systems:

    OUT/images_background/<Script>/character<NN>/<k>.png     k = 01..20
    OUT/images_evaluation/<Script>/character<NN>/<k>.png
    OUT/characters.tsv       which code point each character folder holds, and its fonts
    OUT/contact_sheet.png    a few characters of every script, several examples each

Every image is 105×105 (Omniglot's size; ``--size``), 1-bit, black strokes on white. Each of
the 20 examples of a character is drawn with a different font where the script has several
(family first, then a weight or width of it), with a seeded random distortion that stands in
for a different hand: scale, aspect, rotation, shear, shift and a smooth elastic warp. Then,
as Omniglot's strokes were drawn with one pen, the glyph is thinned to its skeleton (Zhang and
Suen's thinning) and drawn again with a pen of random width (Pillow's MaxFilter); the few
glyphs whose skeleton loses their shape (solid diamonds, say) keep the font's own strokes.
Glyphs that a font does not have are dropped: a rendering equal to the font's rendering of an
unassigned code point (its .notdef box), blank, or tiny does not count, and a character needs
at least two fonts that draw it differently. Scripts are split into background and evaluation
(about 60/40) by a seeded shuffle.

Fonts come from Debian packages; what is found under ``--font-dir`` decides which scripts and
characters the data holds, so the same packages give the same data (the run is seeded):

    apt-get install fonts-noto-core fonts-noto-extra fonts-noto-ui-core fonts-freefont-ttf \\
        fonts-dejavu-core fonts-dejavu-extra fonts-indic fonts-thai-tlwg fonts-lao \\
        fonts-sil-abyssinica fonts-tibetan-machine fonts-vlgothic fonts-ipafont-gothic \\
        fonts-ipafont-mincho fonts-unfonts-core fonts-nanum fonts-kacst fonts-hosny-amiri \\
        fonts-sil-scheherazade fonts-bpg-georgian fonts-sil-ezra fonts-sil-gentium \\
        fonts-linuxlibertine fonts-urw-base35 fonts-smc fonts-sil-padauk fonts-khmeros \\
        fonts-ancient-scripts

    python bench/make_glyphs.py                       # -> bench/.data/glyphs
    python bench/make_glyphs.py --out /tmp/glyphs --size 64 --overwrite
    siamnet data info bench/.data/glyphs

With the packages above: 35 scripts (Mongolian has one font and is left out), 1,272
characters, 25,440 images, about 100 MB; four to seven minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import time
import unicodedata
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

DEFAULT_OUT = Path(__file__).resolve().parent / ".data" / "glyphs"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
#: Fonts whose letters are not letters (symbol encodings, pictographs) or that cannot be scaled.
EXCLUDED_FONTS = re.compile(
    r"emoji|symbol|dingbat|d050000l|unidings|musica|maya|gardiner|"
    r"aegyptus|abydos|akkadian|assyrian|lastresort",
    re.I,
)
#: An unassigned code point: a font draws it with its .notdef glyph (a box, or nothing).
UNASSIGNED = "\u0378"
PROBE_SIZE = 40  # pixels per em when checking which glyphs a font has
MIN_FONTS = 2  # distinct renderings a character needs
PEN_COVERAGE = 0.8  # share of a glyph's ink that its skeleton must explain to be redrawn


def _span(first: int, last: int, step: int = 1) -> list[int]:
    return list(range(first, last + 1, step))


def _named(prefix: str, names: str) -> list[int]:
    """Code points of ``prefix + name`` for each space-separated name that Unicode knows."""
    out = []
    for name in names.split():
        try:
            out.append(ord(unicodedata.lookup(f"{prefix} {name}")))
        except KeyError:
            continue
    return out


#: Candidate code points per script: base letters only (no marks, digits or small forms).
SCRIPTS: dict[str, list[int]] = {
    "Latin": _span(0x41, 0x5A),
    "Greek": _span(0x3B1, 0x3C9),
    "Cyrillic": [ord(c) for c in "БГДЖЗИЙЛПУФЦЧШЩЪЫЬЭЮЯЂЄЉЊЋЏѢѲ"],
    "Armenian": _span(0x531, 0x556),
    "Georgian": _span(0x10D0, 0x10F0),
    "Hebrew": _span(0x5D0, 0x5EA),
    "Arabic": _span(0x621, 0x63A) + _span(0x641, 0x64A),
    "Syriac": _span(0x710, 0x72C),
    "Thaana": _span(0x780, 0x797),
    "NKo": _span(0x7CA, 0x7EA),
    "Devanagari": _span(0x904, 0x939),
    "Bengali": _span(0x985, 0x9B9),
    "Gurmukhi": _span(0xA05, 0xA39),
    "Gujarati": _span(0xA85, 0xAB9),
    "Oriya": _span(0xB05, 0xB39),
    "Tamil": _span(0xB85, 0xBB9),
    "Telugu": _span(0xC05, 0xC39),
    "Kannada": _span(0xC85, 0xCB9),
    "Malayalam": _span(0xD05, 0xD3A),
    "Sinhala": _span(0xD85, 0xDC6),
    "Thai": _span(0xE01, 0xE2E),
    "Lao": _span(0xE81, 0xEAE),
    "Tibetan": _span(0xF40, 0xF6C),
    "Myanmar": _span(0x1000, 0x102A),
    "Khmer": _span(0x1780, 0x17A2),
    "Ethiopic": _span(0x1200, 0x1350, 8),
    "Cherokee": _span(0x13A0, 0x13F4),
    "Canadian_Syllabics": _named(
        "CANADIAN SYLLABICS",
        "E I O A PE PI PO PA TE TI TO TA KE KI KO KA CE CI CO CA ME MI MO MA NE NI NO NA "
        "SE SI SO SA YE YI YO YA LE LI LO LA RE RI RO RA FE FI FO FA",
    ),
    "Runic": _span(0x16A0, 0x16EA),
    "Ogham": _span(0x1681, 0x169A),
    "Mongolian": _span(0x1820, 0x1842),
    "Tifinagh": _span(0x2D30, 0x2D65),
    "Glagolitic": _span(0x2C00, 0x2C2E),
    "Hangul": _span(0x3131, 0x3163),
    "Hiragana": _span(0x3041, 0x3096),
    "Katakana": _span(0x30A1, 0x30FA),
}


def candidates(script: str) -> list[str]:
    """The script's candidate characters: assigned letters (L*), small kana left out."""
    out = []
    for cp in SCRIPTS[script]:
        ch = chr(cp)
        if unicodedata.category(ch) in ("Lu", "Ll", "Lo") and "LETTER SMALL" not in (
            unicodedata.name(ch, "")
        ):
            out.append(ch)
    return out


# --- fonts ----------------------------------------------------------------------------------


def find_fonts(font_dirs: list[Path]) -> list[Path]:
    """Scalable font files under `font_dirs`, sorted, symbol and pictograph fonts left out."""
    files = {
        path.resolve()
        for folder in font_dirs
        if folder.is_dir()
        for path in folder.rglob("*")
        if path.suffix.lower() in FONT_SUFFIXES and not EXCLUDED_FONTS.search(path.name)
    }
    return sorted(files)


_STYLE_WORDS = re.compile(
    r"(_hint|_[BIJR]|[BIJR]$|Bold|Italic|Oblique|Regular|Roman|Book|Demi|Light|Medium|Thin|"
    r"Black|Heavy|ExtraBold|SemiBold|Condensed|Narrow|Slanted|Italics)+$"
)


def family_of(path: Path) -> str:
    """A font file's family, from its name: ``NotoSansArmenian-CondensedBold`` ->
    ``NotoSansArmenian``, ``FreeSerifBoldItalic`` -> ``FreeSerif``."""
    stem = path.stem.split("-")[0]
    return _STYLE_WORDS.sub("", stem) or stem


@lru_cache(maxsize=64)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    """The font at `size` pixels per em, laid out glyph by glyph; None when it cannot load."""
    try:
        return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)
    except OSError:
        return None


def glyph_key(font: ImageFont.FreeTypeFont, ch: str) -> bytes | None:
    """A digest of how `font` draws `ch` at the probe size; None when blank or tiny."""
    try:
        mask = font.getmask(ch, mode="L")
    except (OSError, ValueError):
        return None
    width, height = mask.size
    if width == 0 or height == 0:
        return None
    pixels = np.asarray(mask, dtype=np.uint8).reshape(height, width)
    ink = pixels > 127
    if ink.sum() < 12 or max(width, height) < PROBE_SIZE * 0.15:
        return None
    return hashlib.blake2b(
        pixels.tobytes() + bytes(f"{width}x{height}", "ascii"), digest_size=12
    ).digest()


def survey_font(path: Path) -> dict[str, dict[str, bytes]]:
    """Which candidate characters `path` draws, per script: ``{script: {char: glyph digest}}``.

    A glyph counts when it is neither the font's .notdef (its rendering of an unassigned code
    point) nor blank nor tiny. A script is surveyed only when two of three probes draw."""
    font = load_font(str(path), PROBE_SIZE)
    if font is None:
        return {}
    notdef = glyph_key(font, UNASSIGNED)
    found: dict[str, dict[str, bytes]] = {}
    for script in SCRIPTS:
        chars = candidates(script)
        probes = [chars[0], chars[len(chars) // 2], chars[-1]]
        drawn = [key for ch in probes if (key := glyph_key(font, ch)) and key != notdef]
        if len(drawn) < 2:
            continue
        keys = {}
        for ch in chars:
            key = glyph_key(font, ch)
            if key is not None and key != notdef:
                keys[ch] = key
        found[script] = keys
    return found


@dataclass
class Character:
    """One character of the data set and the fonts that draw it, grouped by family."""

    script: str
    char: str
    families: dict[str, list[str]]  # family -> font files (distinct renderings)

    @property
    def fonts(self) -> int:
        return sum(len(v) for v in self.families.values())


def survey(fonts: list[Path], workers: int) -> dict[str, list[Character]]:
    """Every script's characters that at least `MIN_FONTS` fonts draw differently."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        reports = list(pool.map(survey_font, fonts, chunksize=16))
    seen: dict[tuple[str, str], dict[bytes, Path]] = defaultdict(dict)
    for path, report in zip(fonts, reports, strict=True):
        for script, keys in report.items():
            for ch, key in keys.items():
                seen[(script, ch)].setdefault(key, path)  # first font of each distinct look
    out: dict[str, list[Character]] = {}
    for script in SCRIPTS:
        chars = []
        for ch in candidates(script):
            paths = sorted(seen.get((script, ch), {}).values())
            if len(paths) < MIN_FONTS:
                continue
            families: dict[str, list[str]] = defaultdict(list)
            for path in paths:
                families[family_of(path)].append(str(path))
            chars.append(Character(script, ch, dict(families)))
        out[script] = chars
    return out


# --- drawing --------------------------------------------------------------------------------


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    words = [seed] + [zlib.crc32(str(p).encode()) for p in parts]
    return np.random.default_rng(words)


def pick_fonts(character: Character, examples: int, seed: int) -> list[str]:
    """A font per example: families in a seeded round robin, a random member of each."""
    rng = _rng(seed, "fonts", character.script, ord(character.char))
    names = sorted(character.families)
    order = [names[i] for i in rng.permutation(len(names))]
    return [str(rng.choice(character.families[order[k % len(order)]])) for k in range(examples)]


def render_glyph(font_path: str, ch: str, em: int) -> Image.Image:
    """`ch` in `font_path` at `em` pixels per em, mode L, white ink on black, cropped."""
    font = load_font(font_path, em)
    assert font is not None
    left, top, right, bottom = font.getbbox(ch)
    pad = 4
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(image).text((pad - left, pad - top), ch, font=font, fill=255)
    box = image.getbbox()
    return image.crop(box) if box else image


def thin(ink: np.ndarray) -> np.ndarray:
    """The one-pixel skeleton of a boolean mask ``[H, W]`` (Zhang & Suen's thinning, 1984)."""
    img = np.pad(ink, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            n, ne, e, se = p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:]
            s, sw, w, nw = p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]
            ring = (n, ne, e, se, s, sw, w, nw, n)
            count = n + ne + e + se + s + sw + w + nw
            turns = sum((ring[i] == 0) & (ring[i + 1] == 1) for i in range(8))
            if step == 0:
                side = (n * e * s == 0) & (e * s * w == 0)
            else:
                side = (n * e * w == 0) & (n * s * w == 0)
            drop = (p[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (turns == 1) & side
            if drop.any():
                img[1:-1, 1:-1][drop] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def _dilate_cross(image: Image.Image) -> Image.Image:
    out = image
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        out = ImageChops.lighter(out, ImageChops.offset(image, dx, dy))
    return out


def redraw_with_pen(image: Image.Image, width: float) -> Image.Image:
    """White strokes of `image` (mode L) redrawn with a round-ish pen `width` pixels wide: the
    skeleton, thickened with Pillow's MaxFilter alternating with a cross neighbourhood."""
    skeleton = thin(np.asarray(image) >= 128)
    pen = Image.fromarray(skeleton.astype(np.uint8) * 255, mode="L")
    for i in range(max(0, int(round((width - 1) / 2)))):
        pen = pen.filter(ImageFilter.MaxFilter(3)) if i % 2 == 0 else _dilate_cross(pen)
    return pen


def depth_map(ink: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``: how many 3×3 erosions (MinFilter) each ink pixel survives, plus one."""
    depth = ink.astype(np.uint8)
    current = Image.fromarray(depth * 255, mode="L")
    while depth.max() < 255:
        current = current.filter(ImageFilter.MinFilter(3))
        left = np.asarray(current) > 0
        if not left.any():
            break
        depth += left
    return depth


@lru_cache(maxsize=4096)
def pen_coverage(font_path: str, ch: str, em: int) -> float:
    """How well a pen drawing along the skeleton keeps the glyph's shape: the share of its ink
    that the skeleton covers, each point widened by its own stroke depth. Solid shapes (Noto's
    diamond-shaped Ogham vowels) thin to a bare line and score low."""
    ink = np.asarray(render_glyph(font_path, ch, em)) >= 128
    if not ink.any():
        return 0.0
    depth = depth_map(ink)
    grown = Image.fromarray(np.where(thin(ink), depth, 0).astype(np.uint8), mode="L")
    for _ in range(int(depth.max())):
        shrunk = grown.filter(ImageFilter.MaxFilter(3)).point(lambda v: max(v - 1, 0))
        grown = ImageChops.lighter(grown, shrunk)
    covered = ink & (np.asarray(grown) > 0)
    return float(covered.sum()) / float(ink.sum())


def draw_example(font_path: str, ch: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One 1-bit ``size``×``size`` example of `ch`: black on white, distorted as by a hand."""
    work = 2 * size  # draw at twice the size, then reduce (smooth edges)
    glyph = render_glyph(font_path, ch, work)
    gw, gh = glyph.size
    extent = rng.uniform(0.5, 0.78) * work
    scale = extent / max(gw, gh, 1)
    aspect = np.exp(rng.uniform(-0.12, 0.12))
    angle = np.deg2rad(rng.uniform(-10, 10))
    shear = rng.uniform(-0.15, 0.15)
    shift = rng.uniform(-0.06, 0.06, size=2) * work
    # forward map: out = centre + shift + R @ H @ S @ (in - glyph centre)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale / aspect])
    inverse = np.linalg.inv(forward)
    centre_out = np.array([work / 2, work / 2]) + shift
    centre_in = np.array([gw / 2, gh / 2])
    # smooth elastic warp: a coarse grid whose inner nodes move, each cell a bilinear quad
    cells = 4
    sigma = rng.uniform(0.01, 0.03) * work
    nodes = np.stack(
        np.meshgrid(
            np.linspace(0, work, cells + 1), np.linspace(0, work, cells + 1), indexing="xy"
        ),
        -1,
    )
    moved = nodes.copy()
    moved[1:-1, 1:-1] += rng.normal(0.0, sigma, size=(cells - 1, cells - 1, 2))
    source = (moved - centre_out) @ inverse.T + centre_in  # output point -> glyph point
    mesh = []
    for r in range(cells):
        for c in range(cells):
            box = tuple(int(round(v)) for v in (*nodes[r, c], *nodes[r + 1, c + 1]))
            quad = (*source[r, c], *source[r + 1, c], *source[r + 1, c + 1], *source[r, c + 1])
            mesh.append((box, tuple(float(v) for v in quad)))
    image = glyph.transform(
        (work, work), Image.Transform.MESH, mesh, resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    pen = 2 * rng.uniform(2.5, 5.0)  # drawn before the test so that draws stay aligned
    if pen_coverage(font_path, ch, work) >= PEN_COVERAGE:
        image = redraw_with_pen(image, pen)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image.point(lambda v: 0 if v >= 128 else 255, mode="1")


def draw_character(job: tuple[Character, str, int, int, int]) -> tuple[str, int]:
    """Write the examples of one character to `folder`; returns (script, images written)."""
    character, folder, examples, size, seed = job
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    fonts = pick_fonts(character, examples, seed)
    for k, font_path in enumerate(fonts, start=1):
        rng = _rng(seed, "draw", character.script, ord(character.char), k)
        draw_example(font_path, character.char, size, rng).save(
            path / f"{k:02d}.png", optimize=True
        )
    return character.script, len(fonts)


# --- the data set -----------------------------------------------------------------------------


def choose(chars: list[Character], script: str, most: int, seed: int) -> list[Character]:
    """At most `most` characters, a seeded random choice kept in code point order."""
    if len(chars) <= most:
        return chars
    rng = _rng(seed, "choose", script)
    keep = sorted(rng.choice(len(chars), size=most, replace=False).tolist())
    return [chars[i] for i in keep]


def split_scripts(scripts: list[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """``{script: "images_background" | "images_evaluation"}`` by a seeded shuffle."""
    rng = _rng(seed, "split")
    order = [scripts[i] for i in rng.permutation(len(scripts))]
    n_eval = max(1, int(round(eval_fraction * len(scripts))))
    evaluation = set(order[:n_eval])
    return {s: "images_evaluation" if s in evaluation else "images_background" for s in scripts}


def contact_sheet(
    out: Path,
    plan: dict[str, tuple[str, list[Character]]],
    chars: int = 4,
    examples: int = 5,
    tile: int = 44,
) -> Path:
    """A PNG with one row per script: `chars` characters × `examples` examples each."""
    label_w, gap = 190, 8
    rows = sorted(plan.items(), key=lambda kv: (kv[1][0], kv[0]))
    width = label_w + chars * (examples * tile + gap)
    sheet = Image.new("L", (width, len(rows) * (tile + 4) + 4), 255)
    draw = ImageDraw.Draw(sheet)
    label_font = _label_font()
    for r, (script, (split, characters)) in enumerate(rows):
        y = 4 + r * (tile + 4)
        draw.text(
            (4, y + tile // 3), f"{script} ({split.split('_')[1][:4]})", fill=0, font=label_font
        )
        step = max(1, len(characters) // chars)
        for c, index in enumerate(range(0, step * chars, step)):
            if index >= len(characters):
                break
            folder = out / split / script / f"character{index + 1:02d}"
            for k in range(examples):
                with Image.open(folder / f"{k + 1:02d}.png") as img:
                    small = img.convert("L").resize((tile, tile), Image.Resampling.BOX)
                x = label_w + c * (examples * tile + gap) + k * tile
                sheet.paste(small, (x, y))
            x0 = label_w + c * (examples * tile + gap)
            draw.rectangle((x0 - 1, y - 1, x0 + examples * tile, y + tile), outline=160)
    path = out / "contact_sheet.png"
    sheet.save(path, optimize=True)
    return path


def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def build(
    out: Path,
    *,
    size: int,
    examples: int,
    max_chars: int,
    min_chars: int,
    eval_fraction: float,
    seed: int,
    font_dirs: list[Path],
    workers: int,
    scripts: list[str] | None = None,
) -> dict[str, tuple[str, list[Character]]]:
    """Survey the fonts, choose characters, draw every example into `out` (a new folder)."""
    fonts = find_fonts(font_dirs)
    if not fonts:
        raise SystemExit(f"no fonts found under {', '.join(map(str, font_dirs))}")
    start = time.perf_counter()
    surveyed = survey(fonts, workers)
    print(
        f"surveyed {len(fonts):,} font files in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    chosen: dict[str, list[Character]] = {}
    for script, chars in surveyed.items():
        if scripts and script not in scripts:
            continue
        if len(chars) < min_chars:
            print(
                f"skipping {script}: {len(chars)} characters drawn by {MIN_FONTS}+ fonts "
                f"(need {min_chars})",
                file=sys.stderr,
            )
            continue
        chosen[script] = choose(chars, script, max_chars, seed)
    splits = split_scripts(sorted(chosen), eval_fraction, seed)
    plan = {s: (splits[s], chosen[s]) for s in sorted(chosen)}
    jobs = [
        (character, str(out / split / script / f"character{i:02d}"), examples, size, seed)
        for script, (split, chars) in plan.items()
        for i, character in enumerate(chars, start=1)
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        written = sum(n for _, n in pool.map(draw_character, jobs, chunksize=4))
    print(f"drew {written:,} images in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    lines = ["split\tscript\tfolder\tcode_point\tchar\tname\tfonts\tfamilies"]
    for script, (split, chars) in plan.items():
        for i, c in enumerate(chars, start=1):
            lines.append(
                f"{split}\t{script}\tcharacter{i:02d}\tU+{ord(c.char):04X}\t{c.char}\t"
                f"{unicodedata.name(c.char, '?')}\t{c.fonts}\t"
                f"{','.join(sorted(c.families))}"
            )
    (out / "characters.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return plan


def summary(plan: dict[str, tuple[str, list[Character]]], examples: int) -> str:
    lines = []
    for split in ("images_background", "images_evaluation"):
        scripts = {s: chars for s, (sp, chars) in plan.items() if sp == split}
        n_chars = sum(len(c) for c in scripts.values())
        lines.append(
            f"{split}: {len(scripts)} scripts, {n_chars} characters, {n_chars * examples:,} images"
        )
        for script, chars in scripts.items():
            families = len({f for c in chars for f in c.families})
            lines.append(f"  {script:<20} {len(chars):>3} characters, {families:>3} font families")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--size", type=int, default=105, help="image side in pixels (105)")
    parser.add_argument("--examples", type=int, default=20, help="examples per character (20)")
    parser.add_argument("--max-chars", type=int, default=40, help="characters per script (40)")
    parser.add_argument(
        "--min-chars",
        type=int,
        default=15,
        help="scripts with fewer usable characters are left out (15)",
    )
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.4,
        help="share of scripts held out in images_evaluation (0.4)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--font-dir",
        type=Path,
        action="append",
        help="where to look for fonts (default /usr/share/fonts)",
    )
    parser.add_argument("--scripts", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.size < 16 or args.examples < 2 or args.max_chars < 2:
        parser.error("--size must be at least 16, --examples and --max-chars at least 2")
    if not 0.0 < args.eval_fraction < 1.0:
        parser.error("--eval-fraction must lie strictly between 0 and 1")
    scripts = args.scripts.split(",") if args.scripts else None
    unknown = sorted(set(scripts or []) - set(SCRIPTS))
    if unknown:
        parser.error(f"--scripts: unknown {', '.join(unknown)}")
    out: Path = args.out
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        plan = build(
            tmp,
            size=args.size,
            examples=args.examples,
            max_chars=args.max_chars,
            min_chars=args.min_chars,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
            font_dirs=args.font_dir or [Path("/usr/share/fonts")],
            workers=args.workers,
            scripts=scripts,
        )
        sheet = contact_sheet(tmp, plan)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(summary(plan, args.examples))
    print(f"wrote {out} (characters.tsv lists every character; contact sheet {out / sheet.name})")


if __name__ == "__main__":
    main()
