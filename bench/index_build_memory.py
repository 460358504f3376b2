"""Peak memory of building a gallery of 5,000 and of 20,000 images: ``siamnet index build``
(read and embedded a chunk at a time) against reading every image before embedding any (the
whole-folder path, `read_gallery_items` + `build_gallery`), each in a fresh process, in one run.

The images are generated grey PNGs (`--image-size`, 64×64 by default) in ten class folders; the
model is a tiny untrained checkpoint (seed-cnn, 84-d embeddings) written by this script. Each
build runs as a child process; its peak resident set size is the child's own ``ru_maxrss``
(`os.wait4`). The target is a peak flat in the number of images for ``index build``: the
images held at a time are one chunk (`siamnet.models.embed.CHUNK_BYTES`), only the embeddings
(N × 84 floats) grow with the gallery.

    python bench/index_build_memory.py                      # 5,000 and 20,000 images
    python bench/index_build_memory.py --sizes 500 2000 --no-write --json out.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from results import machine, table, write_section

SIAMNET = str(Path(sys.executable).with_name("siamnet"))

WHOLE_FOLDER = textwrap.dedent(
    """
    import sys
    from siamnet.checkpoint import load_checkpoint
    from siamnet.gallery import build_gallery, read_gallery_items
    ckpt = load_checkpoint(sys.argv[1], "cpu")
    items = read_gallery_items(sys.argv[2], ckpt.spec.in_channels, ckpt.spec.image_size)
    build_gallery(ckpt, items.images, items.labels, items.names, sys.argv[3])
    """
)


def write_model(path: Path, size: int) -> Path:
    """A tiny untrained checkpoint for images of `size`×`size`."""
    from siamnet.checkpoint import save_checkpoint
    from siamnet.models.siamese import ModelSpec, build_model

    spec = ModelSpec(
        model="seed-cnn", loss="contrastive", head="euclidean", image_size=(size, size)
    )
    metadata = {"model_spec": spec.to_dict(), "classes": [], "threshold": -0.5, "training_args": {}}
    save_checkpoint(path, build_model(spec), metadata)
    return path


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """`count` grey PNGs of `size`×`size` (blurred noise) in ten class folders."""
    rng = np.random.default_rng(seed)
    for k in range(10):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 256, (size // 4, size // 4), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        image.save(folder / f"class{i % 10}" / f"{i:06d}.png")
    return folder


def peak_rss_mb(argv: list[str]) -> float:
    """Run `argv` as a child; its peak resident set size in MiB (its own ``ru_maxrss``)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed ({proc.returncode}): {err[-2000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--method", default="exact", help="index build --method")
    parser.add_argument("--dir", type=Path, default=None, help="where images are written")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    rows, record = [], {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="index-memory-") as tmp:
        root = Path(tmp)
        model = write_model(root / "model.pt", args.image_size)
        for count in args.sizes:
            images = write_images(root / f"images-{count}", count, args.image_size)
            out = root / f"gallery-{count}"
            streamed = peak_rss_mb(
                [SIAMNET, "index", "build", str(model), "--data", str(images), "--out", str(out),
                 "--method", args.method, "--device", "cpu", "--quiet"]
            )  # fmt: skip
            shutil.rmtree(out)
            whole = peak_rss_mb(
                [sys.executable, "-c", WHOLE_FOLDER, str(model), str(images), str(out)]
            )
            shutil.rmtree(out)
            shutil.rmtree(images)
            record[count] = {"index_build_mb": streamed, "whole_folder_mb": whole}
            rows.append([f"{count:,}", f"{streamed:,.0f}", f"{whole:,.0f}"])
            print(f"{count:,} images: index build {streamed:,.0f} MiB, whole folder first "
                  f"{whole:,.0f} MiB", flush=True)  # fmt: skip
    first, last = record[args.sizes[0]], record[args.sizes[-1]]
    growth = {k: last[k] - first[k] for k in first}
    verdict = (
        f"from {args.sizes[0]:,} to {args.sizes[-1]:,} images the peak grows by "
        f"{growth['index_build_mb']:,.0f} MiB for index build and {growth['whole_folder_mb']:,.0f} "
        f"MiB reading the whole folder first (images of {args.image_size}×{args.image_size}: "
        f"{(args.sizes[-1] - args.sizes[0]) * args.image_size**2 / 2**20:,.0f} MiB of pixels more)"
    )
    header = ["images", "index build peak RSS MiB", "whole folder first, MiB"]
    print(table(header, rows))
    print(verdict)
    command = f"python bench/index_build_memory.py --sizes {' '.join(map(str, args.sizes))}"
    if args.json is not None:
        args.json.write_text(
            json.dumps({"results": record, "verdict": verdict, "image_size": args.image_size,
                        "method": args.method, "machine": machine(), "command": command},
                       indent=2)
        )  # fmt: skip
    if not args.no_write:
        body = "\n\n".join(
            [
                f"Peak resident set size of a gallery build from a folder of generated "
                f"{args.image_size}×{args.image_size} grey PNGs (tiny untrained seed-cnn, "
                f"--method {args.method}, CPU), each build in its own process (`os.wait4`'s "
                "ru_maxrss of the child).",
                table(header, rows),
                verdict + ".",
                f"Machine: {machine()}. Reproduce: `{command}`",
            ]
        )
        write_section("Gallery build memory", body)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
