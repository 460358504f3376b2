"""Photographs: a timm backbone, untrained and from local weights, against conv4-map and the
default recipe, on a generated colour folder; Recall@1 and N-way 1-shot accuracy on classes
never seen in training, beside raw-pixel nearest neighbour, in one run.

The folder is drawn here (seeded): each class is an object (a shape, two colours, a stripe
pattern) drawn at a random place, size and angle on a random noisy background, in images of
several sizes and aspects (JPEG, some PNG, some RGBA). A third of the classes are held out of
training (``--eval-fraction``). Each variant is trained by the installed command with the same
time budget and scored by ``siamnet evaluate`` on the held-out classes:

- conv4-map: the default recipe's backbone as it was before photographs (``--model
  conv4-map``, squared distances between flat 4,096-d maps at 64 px);
- default: the default recipe as it is (on colour images: conv4-pool, unit length);
- timm untrained: ``--model timm:NAME`` from random weights;
- timm with weights: ``--model timm:NAME --pretrained FILE``: the weights timm publishes when
  they are in this machine's Hugging Face or torch hub cache, otherwise a file saved here from
  a fixed-seed untrained model (which says only that loading works, nothing of ImageNet).

    python bench/timm_photos.py                   # 150 classes × 20 images, 64 px, 300 s each
    python bench/timm_photos.py --classes 12 --per-class 6 --size 32 --budget 4 \\
        --ways 4 --no-write --json /tmp/timm_photos.json        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from results import machine, table, write_section

SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "star", "cross")


def class_looks(classes: int, seed: int) -> list[dict]:
    """One look per class: shape, two colours, stripe angle and period."""
    rng = np.random.default_rng(seed)
    return [
        {
            "shape": SHAPES[k % len(SHAPES)],
            "colours": rng.integers(0, 256, (2, 3)).tolist(),
            "angle": float(rng.uniform(0, math.pi)),
            "period": float(rng.uniform(4, 12)),
        }
        for k in range(classes)
    ]


def polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    corners = {"triangle": 3, "diamond": 4, "star": 10, "cross": 12}[shape]
    points = []
    for i in range(corners):
        a = turn + 2 * math.pi * i / corners
        radius = r * (0.45 if shape in ("star", "cross") and i % 2 else 1.0)
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def draw_example(look: dict, rng: np.random.Generator) -> Image.Image:
    """One photo of a class: its object on a random background, in a random size and aspect."""
    w = int(rng.integers(56, 130))
    h = int(np.clip(w / rng.uniform(0.75, 1.33), 48, 160))
    background = rng.integers(0, 256, 3)
    pixels = background + rng.normal(0, 18, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    along = np.cos(look["angle"]) * xx + np.sin(look["angle"]) * yy
    stripes = (np.sin(2 * math.pi * along / look["period"]) > 0)[..., None]
    a, b = (np.array(c) for c in look["colours"])
    pattern = np.where(stripes, a, b) * rng.uniform(0.8, 1.2) + rng.normal(0, 10, (h, w, 3))
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    r = min(w, h) * rng.uniform(0.25, 0.42)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    if look["shape"] == "ellipse":
        draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=255)
    elif look["shape"] == "rectangle":
        draw.rectangle([cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r], fill=255)
    else:
        draw.polygon(polygon(look["shape"], cx, cy, r, rng.uniform(-0.4, 0.4)), fill=255)
    inside = (np.asarray(mask) > 0)[..., None]
    image = np.where(inside, pattern, pixels).clip(0, 255).astype(np.uint8)
    return Image.fromarray(image)


def write_photo_folder(root: Path, classes: int, per_class: int, seed: int) -> Path:
    """`classes` folders of `per_class` photos each (JPEG; every fifth a PNG, every seventh an
    RGBA PNG)."""
    rng = np.random.default_rng(seed + 1)
    for k, look in enumerate(class_looks(classes, seed)):
        folder = root / f"class{k:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = draw_example(look, rng)
            if i % 7 == 6:
                image.putalpha(255)
                image.save(folder / f"{i}.png")
            elif i % 5 == 4:
                image.save(folder / f"{i}.png")
            else:
                image.save(folder / f"{i}.jpg", quality=90)
    return root


def siamnet(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "siamnet", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def local_weights(name: str, where: Path) -> tuple[Path, str]:
    """The published weights of ``timm:NAME`` if this machine has them, else a safetensors
    file of a fixed-seed untrained model written to `where`; and which of the two it is."""
    import timm
    import torch
    from safetensors.torch import save_file

    from siamnet.errors import ArgumentError
    from siamnet.models.pretrained import find_timm_weights

    try:
        return find_timm_weights(f"timm:{name}"), "published weights (local cache)"
    except ArgumentError:
        torch.manual_seed(1234)
        path = where / f"{name}-seed1234.safetensors"
        save_file(timm.create_model(name).state_dict(), str(path))
        return path, "fixed-seed untrained weights (none published on this machine)"


def run_variant(args, data: Path, out: Path, extra: list[str]) -> dict:
    train = siamnet(
        "train", "--data", data, "--eval-fraction", args.eval_fraction, "--image-size",
        args.size, "--time-budget", args.budget, "--seed", args.seed, "--out", out,
        "--overwrite", "--quiet", "--json", *extra,
    )  # fmt: skip
    if train.returncode != 0:
        raise SystemExit(f"train {' '.join(extra)} failed:\n{train.stderr}")
    evaluate = siamnet(
        "evaluate", out, "--ways", args.ways, "--shots", "1", "--episodes", args.episodes,
        "--json", "-",
    )  # fmt: skip
    if evaluate.returncode != 0:
        raise SystemExit(f"evaluate {out} failed:\n{evaluate.stderr}")
    summary, report = json.loads(train.stdout), json.loads(evaluate.stdout)
    row = next(r for r in report["one_shot"] if r["shots"] == 1)
    pixels = next(
        r for r in report["one_shot_pixels"] if (r["ways"], r["shots"]) == (row["ways"], 1)
    )
    retrieval, raw = report.get("retrieval") or {}, report.get("retrieval_pixels") or {}
    return {
        "epochs": summary["epochs_run"],
        "images_seen": summary["images_seen"],
        "train_seconds": summary["train_seconds"],
        "ways": row["ways"],
        "one_shot": row["accuracy"],
        "one_shot_ci95": row.get("ci95"),
        "one_shot_pixels": pixels["accuracy"],
        "recall_at_1": retrieval.get("recall_at_k", {}).get("1"),
        "recall_at_1_pixels": raw.get("recall_at_k", {}).get("1"),
        "map_at_r": retrieval.get("map_at_r"),
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--size", type=int, default=64, help="training and evaluation side (px)")
    p.add_argument("--budget", type=float, default=300, help="training seconds per variant")
    p.add_argument("--timm", default="resnet10t", help="the timm model")
    p.add_argument("--eval-fraction", type=float, default=1 / 3)
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="folder for the data and runs (default: a temp)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--no-write", action="store_true", help="leave bench/RESULTS.md alone")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "photos"
        if not data.exists():
            write_photo_folder(data, args.classes, args.per_class, args.seed)
        weights, source = local_weights(args.timm, work)
        timm_model = f"timm:{args.timm}"
        variants = {
            "conv4-map": ["--model", "conv4-map"],
            "default recipe (conv4-pool, unit length)": [],
            f"{timm_model}, untrained": ["--model", timm_model],
            f"{timm_model}, {source}": ["--model", timm_model, "--pretrained", weights],
        }
        results = {}
        for i, (name, extra) in enumerate(variants.items()):
            results[name] = run_variant(args, data, work / f"run{i}", extra)
            print(name, json.dumps(results[name]), flush=True)
    header = ["variant", "epochs", "images seen", f"{args.ways}-way 1-shot", "raw pixels"]
    header += ["Recall@1", "raw pixels", "MAP@R"]
    rows = [
        [name, r["epochs"], r["images_seen"], fmt(r["one_shot"]), fmt(r["one_shot_pixels"])]
        + [fmt(r["recall_at_1"]), fmt(r["recall_at_1_pixels"]), fmt(r["map_at_r"])]
        for name, r in results.items()
    ]
    setup = (
        f"{args.classes} generated classes × {args.per_class} colour photos (56-130 px, aspect "
        f"0.75-1.33), {args.eval_fraction:.2f} of the classes held out; {args.size} px; "
        f"{args.budget:g} s of training each; {machine()}"
    )
    body = (
        f"{setup}\n\n{table(header, rows)}\n\n`python bench/timm_photos.py "
        + " ".join(sys.argv[1:]).strip()
        + "`"
    )
    print(body)
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    if not args.no_write:
        write_section("Photographs: timm backbones against conv4-map", body)


if __name__ == "__main__":
    main()
