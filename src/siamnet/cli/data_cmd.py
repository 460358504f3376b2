"""`siamnet data info|show|fetch`: what a data set holds, a figure of its pairs, and fetching."""

from __future__ import annotations

import argparse
import statistics
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamnet.cli.common import add_quiet, add_verb, parse_image_size, print_json
from siamnet.errors import ArgumentError
from siamnet.outpaths import check_output_file

if TYPE_CHECKING:
    import torch

    from siamnet.data.labeled import LabeledImages

#: Class counts are listed one by one up to this many classes.
MAX_LISTED_CLASSES = 20
#: Columns drawn by ``data show`` at most (one figure column per pair).
MAX_SHOWN_PAIRS = 16
#: Images summed at once for the pixel mean (bounds the int64 temporary).
_MEAN_CHUNK = 4096
#: Images of a folder read from disk that the pixel range and mean are measured on at most
#: (spread evenly over the split; every image when there are no more).
PIXEL_SAMPLE = 1000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "data",
        "Describe a data set, draw a figure of its pairs, or fetch a named data set.",
        "siamnet data info digits\n"
        "  siamnet data show mnist --out pairs.png\n"
        "  siamnet data fetch mnist omniglot",
    )
    p.epilog = (
        "SPEC is a built-in name (digits), a named data set fetched on first use (mnist,\n"
        "fashion-mnist, omniglot) or a path: a .csv or .npz file, IDX files (a file or a folder\n"
        "of them) or a folder of images (<class>/*.png, or <alphabet>/<character>/*.png)."
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    i = add_verb(
        actions,
        "info",
        "Examples, classes, examples per class, image size and pixel range of every split.",
        "siamnet data info digits\n"
        "  siamnet data info mnist_train.csv --json\n"
        "  siamnet data info images/ --image-size 64x64",
    )
    _spec_options(i)
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(func=run_info)

    s = add_verb(
        actions,
        "show",
        "Draw a seeded, balanced batch of pairs (half same, half different) as a PNG.",
        "siamnet data show digits --out pairs.png\n"
        "  siamnet data show omniglot --split evaluation --pairs 8 --seed 3 --out pairs.png",
    )
    _spec_options(s)
    s.add_argument("--out", required=True, metavar="PNG", help="the figure to write")
    s.add_argument("--pairs", type=int, default=10, help=f"pairs to draw, 2..{MAX_SHOWN_PAIRS}")
    s.add_argument(
        "--split",
        help="the split to draw from, e.g. test (when not given: the first, for training)",
    )
    s.add_argument("--seed", type=int, default=0, help="the same seed draws the same pairs")
    s.add_argument(
        "--title", help="the figure's title (when not given: data set, split, pairs and seed)"
    )
    s.set_defaults(func=run_show)

    f = add_verb(
        actions,
        "fetch",
        "Download named data sets into the cache (checked by SHA-256) and print where they are.",
        "siamnet data fetch mnist\n  siamnet data fetch mnist fashion-mnist omniglot",
    )
    f.add_argument("names", nargs="+", metavar="NAME", help="mnist, fashion-mnist or omniglot")
    add_quiet(f)
    f.set_defaults(func=run_fetch)


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a data set name or a path (see 'siamnet data')")
    p.add_argument(
        "--image-size",
        metavar="HxW",
        help="resize every image to HxW (e.g. 28x28, or 28), each side no larger than a "
        "checkpoint's input may be",
    )


def image_size(text: str | None) -> tuple[int, int] | None:
    """``--image-size`` as ``(H, W)``, each side at most the largest input side a checkpoint
    may describe (`siamnet.checkpoint.MAX_IMAGE_SIDE`), so that a typo is refused in one line
    rather than as a failed allocation of ``N·H·W`` bytes."""
    from siamnet.checkpoint import MAX_IMAGE_SIDE

    size = parse_image_size(text)
    if size is not None and max(size) > MAX_IMAGE_SIDE:
        raise ArgumentError(
            f"--image-size {text}: each side must be at most {MAX_IMAGE_SIDE} pixels"
        )
    return size


# --- info ------------------------------------------------------------------------------------
def run_info(args: argparse.Namespace) -> int:
    from siamnet.data.registry import load_dataset

    size = image_size(args.image_size)
    dataset = load_dataset(args.spec, size, cache="off")  # a folder is indexed, not decoded
    splits = [
        split_summary(name, dataset.roles.get(name, ""), data)
        for name, data in dataset.splits.items()
    ]
    if args.json:
        print_json({"spec": args.spec, "name": dataset.name, "splits": splits})
    else:
        print(format_info(args.spec, splits))
    return 0


def split_summary(name: str, role: str, data: LabeledImages | None) -> dict[str, Any]:
    """A JSON-ready description of one split (None when the split is absent)."""
    if data is None:
        return {"name": name, "role": role, "present": False}
    from siamnet.data.cache import wants_cache
    from siamnet.data.image_index import materialized

    counts = data.class_counts().tolist()
    height, width = data.image_size
    pixels, measured = data.images, len(data)
    if data.streamed and len(data) > PIXEL_SAMPLE:
        import torch

        spread = torch.linspace(0, len(data) - 1, PIXEL_SAMPLE).round().long()
        pixels, measured = data.images[spread], PIXEL_SAMPLE
    pixels = materialized(pixels)
    decoded = len(data) * data.channels * height * width
    summary: dict[str, Any] = {
        "name": name,
        "role": role,
        "present": True,
        "examples": len(data),
        "classes": data.num_classes,
        "per_class": {
            "min": min(counts),
            "median": float(statistics.median(counts)),
            "max": max(counts),
        },
        "class_counts": (
            dict(zip(data.classes, counts, strict=True))
            if data.num_classes <= MAX_LISTED_CLASSES
            else None
        ),
        "groups": None if data.groups is None else len(set(data.groups)),
        "height": height,
        "width": width,
        "channels": data.channels,
        "dtype": str(data.images.dtype).removeprefix("torch."),
        "pixel_min": int(pixels.min()),
        "pixel_max": int(pixels.max()),
        "pixel_mean": round(_pixel_mean(pixels), 3),
        "pixels_measured": measured,
        "decoded_bytes": decoded,
        "held_in_memory": not data.streamed or wants_cache(decoded, "auto"),
        "notes": list(data.notes),
    }
    return summary


def _pixel_mean(images: torch.Tensor) -> float:
    """Mean of uint8 ``[N, C, H, W]`` summed exactly in int64, a chunk at a time."""
    import torch

    total = 0
    for start in range(0, images.shape[0], _MEAN_CHUNK):
        total += int(images[start : start + _MEAN_CHUNK].sum(dtype=torch.int64))
    return total / images.numel()


def format_info(spec: str, splits: list[dict[str, Any]]) -> str:
    """The text layout of ``data info``."""
    present = [s for s in splits if s["present"]]
    total = sum(s["examples"] for s in present)
    lines = [f"{spec}: {total:,} examples in {len(present)} split{'s' * (len(present) != 1)}"]
    for s in splits:
        lines.append("")
        lines.append(f"{s['name']}: {s['role']}" if s["role"] else f"{s['name']}:")
        if not s["present"]:
            lines.append("  (absent)")
            continue
        per = s["per_class"]
        channels = s["channels"]
        kind = "grey" if channels == 1 else "colour"
        rows = [
            ("examples", f"{s['examples']:,}"),
            ("classes", f"{s['classes']:,}"),
        ]
        if s["groups"] is not None:
            rows.append(("groups", f"{s['groups']:,}"))
        rows += [
            (
                "per class",
                f"min {per['min']:,}, median {_count(per['median'])}, max {per['max']:,}",
            ),
            (
                "images",
                f"{s['height']}x{s['width']}, {channels} channel{'s' * (channels != 1)} "
                f"({kind}), {s['dtype']}",
            ),
            ("pixels", _pixels_text(s)),
            ("memory", _memory_text(s)),
        ]
        lines += [f"  {label:<10} {value}" for label, value in rows]
        if s["class_counts"] is not None:
            items = [f"{c}: {n:,}" for c, n in s["class_counts"].items()]
            lines += _packed(items, "  counts     ")
        for note in s["notes"]:
            lines += textwrap.wrap(
                note, width=96, initial_indent="  note       ", subsequent_indent=" " * 13
            )
    return "\n".join(lines)


def _pixels_text(s: dict[str, Any]) -> str:
    """``0..255, mean 33.2`` (and how many images, when not all were measured)."""
    text = f"{s['pixel_min']}..{s['pixel_max']}, mean {s['pixel_mean']:.1f}"
    if s["pixels_measured"] < s["examples"]:
        text += f" (of {s['pixels_measured']:,} images spread over the split)"
    return text


def _memory_text(s: dict[str, Any]) -> str:
    """How much the images take decoded, and whether training holds them (``--cache auto``)."""
    size = s["decoded_bytes"]
    amount = (
        f"{size / 2**30:.2f} GB"
        if size >= 2**30
        else f"{size / 2**20:.1f} MB"
        if size >= 2**20
        else f"{size / 2**10:.1f} KB"
    )
    where = "held in memory" if s["held_in_memory"] else "read from disk per batch"
    return f"{amount} decoded; {where} for training (--cache auto)"


def _count(value: float) -> str:
    """``6000.0`` -> ``6,000``; ``135.5`` -> ``135.5``."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _packed(items: list[str], first: str, width: int = 96) -> list[str]:
    """`items` two spaces apart in lines of at most `width` (an item is never split), the first
    line starting with `first` and the others indented as far."""
    lines: list[str] = []
    line, indent = first, " " * len(first)
    for item in items:
        if len(line) > len(indent) and len(line) + 2 + len(item) > width:
            lines.append(line)
            line = indent
        line += ("  " if len(line) > len(indent) else "") + item
    return [*lines, line]


# --- show ------------------------------------------------------------------------------------
def run_show(args: argparse.Namespace) -> int:
    from siamnet.data.pairs import fixed_pairs
    from siamnet.data.registry import load_dataset
    from siamnet.plots.pairs import plot_pairs

    if not 2 <= args.pairs <= MAX_SHOWN_PAIRS:
        raise ArgumentError(
            f"--pairs {args.pairs}: expected 2..{MAX_SHOWN_PAIRS} (one figure column per pair)"
        )
    out = check_output_file(args.out, "--out")
    size = image_size(args.image_size)
    dataset = load_dataset(args.spec, size)
    split = args.split or next(iter(dataset.splits))
    if split not in dataset.splits:
        names = ", ".join(dataset.splits)
        raise ArgumentError(f"--split {split!r}: {args.spec} has the splits {names}")
    data = dataset.splits[split]
    if data is None:
        raise ArgumentError(f"--split {split!r}: {args.spec} has no data in this split")
    left, right, target = fixed_pairs(data.labels, args.pairs, args.seed)
    name = Path(dataset.name).name or dataset.name
    title = args.title or f"{name}, {split}: {args.pairs} pairs (seed {args.seed})"
    plot_pairs(data.images[left], data.images[right], target.bool(), out, title=title)
    print(out)
    return 0


# --- fetch -----------------------------------------------------------------------------------
def run_fetch(args: argparse.Namespace) -> int:
    from siamnet.data.registry import NAMED_DATASETS

    names = [n.lower() for n in args.names]
    unknown = [n for n in names if n not in NAMED_DATASETS]
    if unknown:
        fetchable = ", ".join(n for n in NAMED_DATASETS if n not in ("digits", "glyphs"))
        raise ArgumentError(
            f"cannot fetch {', '.join(map(repr, unknown))}: the named data sets are {fetchable}"
        )
    from siamnet.data.fetch import dataset_dir

    for name in names:
        if name == "digits":
            print("digits: built in (scikit-learn), nothing to fetch")
            continue
        if name == "glyphs":
            from siamnet.data.registry import load_dataset

            load_dataset("glyphs")  # rendered from matplotlib's fonts into the cache, once
            print("glyphs: built in (rendered from matplotlib's fonts), in the cache")
            continue
        print(f"{name}: {dataset_dir(name)}")
    return 0
