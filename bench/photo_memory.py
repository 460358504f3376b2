"""Peak memory of ``siamnet train`` on folders of 5,000 and 20,000 JPEGs of 384x384 at
``--image-size 96``, with the folder held in memory when it fits (``--cache auto``, the
default) and read from disk per batch (``--cache off``), in one run; target: at most 2.5 GB,
and flat in the number of images.

Each run is the installed command in a fresh process, started by a small wrapper process whose
``RUSAGE_CHILDREN`` peak is the training process's own peak resident size (its loader workers
are processes of their own, each smaller); beside it, the peak of the whole process tree's
resident size, sampled from ``/proc`` every 0.2 s (Linux; shared pages of the forked workers
count once per process, so it overstates). The folders are generated once under
``bench/.data`` (`data_path.make_photos`).

    python bench/photo_memory.py                                       # 5,000 and 20,000
    python bench/photo_memory.py --train-args "--ways 20"              # smaller episodes
    python bench/photo_memory.py --sizes 60 120 --time-budget 5 --no-write --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_path import DATA_DIR, make_photos

from results import machine, table, write_section

TARGET_GB = 2.5
CACHES = ("auto", "off")
WRAPPER = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, "
    "text=True); "
    "sys.stderr.write(done.stderr[-2000:] if done.returncode else ''); "
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def siamnet_command() -> list[str]:
    """The installed command beside this Python, or ``python -m siamnet``."""
    beside = Path(sys.executable).parent / "siamnet"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "siamnet"]


def tree_rss(pid: int) -> int:
    """Bytes resident in process `pid` and every process below it (Linux ``/proc``; 0
    elsewhere)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/statm").read_text().split()
            total += int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except (OSError, ValueError, IndexError):
            continue
    return total


def peak(folder: Path, cache: str, args: argparse.Namespace) -> dict[str, float]:
    """Peak resident size (MB) of one training run: the training process's, and the sampled
    process tree's."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            *siamnet_command(), "train", "--data", str(folder),
            "--image-size", str(args.image_size), "--time-budget", str(args.time_budget),
            "--steps-per-epoch", str(args.steps_per_epoch), "--cache", cache,
            "--device", "cpu", "--out", f"{tmp}/run", "--quiet", *args.train_args.split(),
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, *command], stdout=subprocess.PIPE, text=True
        )
        tree = 0
        while proc.poll() is None:
            tree = max(tree, tree_rss(proc.pid))
            time.sleep(0.2)
        out = proc.stdout.read().split() if proc.stdout else []
        code, kb = int(out[0]), int(out[1])
        if code:
            raise SystemExit(f"siamnet train --cache {cache} on {folder} failed ({code})")
    return {
        "peak_rss_mb": kb / 1024,
        "tree_rss_mb": tree / 2**20,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000], help="images")
    parser.add_argument("--classes", type=int, default=250, help="class folders")
    parser.add_argument("--image-size", type=int, default=96, help="--image-size of training")
    parser.add_argument("--time-budget", type=float, default=60.0, help="--time-budget (s)")
    parser.add_argument("--steps-per-epoch", type=int, default=20, help="--steps-per-epoch")
    parser.add_argument(
        "--train-args", default="", help="more arguments of siamnet train, e.g. '--ways 20'"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n in args.sizes:
        folder = make_photos(DATA_DIR / f"photos_{n}_{args.classes}", n, args.classes)
        results[str(n)] = {cache: peak(folder, cache, args) for cache in CACHES}
    rows = [
        [
            f"{int(n):,}",
            *(f"{by[c]['peak_rss_mb']:,.0f} ({by[c]['tree_rss_mb']:,.0f})" for c in CACHES),
        ]
        for n, by in results.items()
    ]
    header = ["JPEGs of 384x384", *(f"--cache {c}: peak MB (tree MB)" for c in CACHES)]
    print(table(header, rows))
    top = max(r["peak_rss_mb"] for by in results.values() for r in by.values()) / 1024
    record = {
        "train_args": args.train_args,
        "image_size": args.image_size,
        "time_budget": args.time_budget,
        "results": results,
        "target_gb": TARGET_GB,
        "largest_peak_gb": top,
        "machine": machine(),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2))
    if not args.no_write:
        body = (
            f"Peak resident size of `siamnet train --image-size {args.image_size} --time-budget "
            f"{args.time_budget:g} --steps-per-epoch {args.steps_per_epoch} {args.train_args}` "
            f"(the default recipe) on generated JPEGs of 384x384 in {args.classes} classes: the "
            "training process's own peak, and in brackets the sampled peak of its process tree "
            "(loader workers included, shared pages counted in each). Target: at most "
            f"{TARGET_GB} GB and flat; largest peak {top:.2f} GB. Measured on {machine()}.\n\n"
            + table(header, rows)
            + "\n\nReproduce: `python bench/photo_memory.py`"
        )
        write_section("Training memory on photographs", body)


if __name__ == "__main__":
    main()
