"""CSV loading: siamnet's `load_csv` against the blog post's pandas code, in one run.

Data: a 60,000-row MNIST-format CSV (no header; a label, then 784 pixel values 0..255 per row),
generated with numpy from a fixed seed: ten stroke templates, one per class, shifted by up to
two pixels, with antialiased edges and noise, so that most pixels are 0 and the file is about
the size of the real ``mnist_train.csv`` (written once into bench/.data/, git-ignored).

Each method runs in a fresh process that imports its modules, then loads the file (which this
script has just read, so that it is in the page cache); wall time is that of the loading alone
and peak memory is the process's peak resident set size (``ru_maxrss``, read in the child)
minus that of a process that imports the same modules and loads nothing. Methods:

- siamnet: ``siamnet.data.sources.csv_source.load_csv`` -> uint8 ``[60000, 1, 28, 28]``.
- the post: ``pd.read_csv(path, header=None)``, labels ``df[0]``, ``df.drop(0, axis=1)``,
  ``.values.reshape((n, 28, 28))`` (int64) and one array per class
  (``[mnist[labels == c] for c in classes]``), as the post's ``MNISTOneShotDataLoader`` does;
  and ``pd.read_csv`` + ``.values`` alone.

pandas is needed for the baseline only: ``pip install pandas``.

    python bench/csv_loading.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from results import machine, table, write_section

DATA_DIR = Path(__file__).with_name(".data")
ROWS, SIDE, CLASSES, SEED = 60000, 28, 10, 0

# Each child prints one JSON line: seconds of loading, peak RSS in KiB (ru_maxrss, and Linux's
# VmHWM as a cross-check), bytes of data held.
_REPORT = """
import json, resource
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")]
print(json.dumps({"seconds": seconds, "maxrss_kib": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss, "hwm_kib": hwm[0] if hwm else None, "held": held}))
"""

# Linux carries the parent's peak RSS into a child's ru_maxrss across fork + exec (exec records
# the peak of the address space it replaces); a shell that forks the child, rather than this
# process, keeps each child's figure its own.
_FORKING_SHELL = ["/bin/sh", "-c", '"$0" "$@"; exit $?']

METHODS = {
    "siamnet": {
        "label": "siamnet `load_csv` (uint8 `[N, 1, 28, 28]`, int64 labels)",
        "imports": "import numpy, torch\nfrom siamnet.data.sources.csv_source import load_csv",
        "work": """
            data = load_csv(path)
            held = data.images.nbytes + data.labels.nbytes
        """,
    },
    "post": {
        "label": "the post: `pd.read_csv`, `drop`, `.values.reshape` (int64), per-class arrays",
        "imports": "import numpy as np, pandas as pd",
        "work": """
            df = pd.read_csv(path, header=None)
            labels = df[0]
            mnist_df = df.drop(0, axis=1)
            n_samples, _ = mnist_df.shape
            mnist = mnist_df.values.reshape((n_samples, 28, 28))
            classes = np.unique(labels)
            per_class = [mnist[labels == c] for c in classes]
            held = mnist.nbytes + sum(a.nbytes for a in per_class) + labels.values.nbytes
        """,
    },
    "pandas": {
        "label": "`pd.read_csv(path, header=None).values` alone (int64)",
        "imports": "import numpy as np, pandas as pd",
        "work": """
            values = pd.read_csv(path, header=None).values
            held = values.nbytes
        """,
    },
}


def child_code(method: str, baseline: bool) -> str:
    """The program a child runs: import, then load (unless `baseline`) and report."""
    spec = METHODS[method]
    work = "seconds = 0.0\nheld = 0" if baseline else textwrap.dedent(spec["work"]).strip()
    timed = "" if baseline else "start = time.perf_counter()\n"
    done = "" if baseline else "seconds = time.perf_counter() - start\n"
    return (
        f"import sys, time\n{spec['imports']}\npath = sys.argv[1]\n{timed}{work}\n{done}{_REPORT}"
    )


def warm_page_cache(path: Path) -> None:
    """Read `path` once (into one reused buffer), so that no run pays for the disk."""
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buffer):
            pass


def run_child(method: str, csv_path: Path, baseline: bool = False) -> dict:
    """Run `method` (or its imports only) in a fresh process; its JSON report."""
    warm_page_cache(csv_path)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(
        [*_FORKING_SHELL, sys.executable, "-c", child_code(method, baseline), str(csv_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- data ------------------------------------------------------------------------------------
def _segment_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre of a SIDE×SIDE grid to the segment a-b: ``[SIDE, SIDE]``."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    p = np.stack([yy, xx], axis=-1)
    d = b - a
    t = np.clip(((p - a) @ d) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * d), axis=-1)


def make_images(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digits-like uint8 images ``[ROWS, 784]`` and labels ``[ROWS]``: per-class strokes."""
    templates = np.zeros((CLASSES, SIDE, SIDE))
    for c in range(CLASSES):
        points = rng.uniform(5, 22, size=(4, 2))
        dist = np.min([_segment_distance(points[i], points[i + 1]) for i in range(3)], axis=0)
        templates[c] = np.clip(2.3 - dist, 0.0, 1.0)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    shifted = np.stack(
        [np.roll(templates, s, axis=(1, 2)) for s in shifts], axis=1
    )  # [CLASSES, 25, SIDE, SIDE]
    labels = rng.integers(0, CLASSES, ROWS)
    which = rng.integers(0, len(shifts), ROWS)
    images = np.empty((ROWS, SIDE * SIDE), dtype=np.uint8)
    for start in range(0, ROWS, 5000):
        sl = slice(start, start + 5000)
        ink = shifted[labels[sl], which[sl]].reshape(-1, SIDE * SIDE)
        gain = rng.uniform(0.8, 1.15, size=(ink.shape[0], 1))
        noisy = ink * gain + rng.normal(0.0, 0.08, size=ink.shape) * (ink > 0)
        images[sl] = np.rint(np.clip(noisy, 0.0, 1.0) * 255).astype(np.uint8)
    return images, labels


def make_csv() -> Path:
    """The generated CSV, written once (to a temporary name, then renamed)."""
    path = DATA_DIR / f"mnist_like_{ROWS}_seed{SEED}.csv"
    if path.exists():
        return path
    DATA_DIR.mkdir(exist_ok=True)
    print(f"writing {path} ...", file=sys.stderr)
    images, labels = make_images(np.random.default_rng(SEED))
    cells = np.array([str(v) for v in range(256)], dtype=object)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w") as fh:
        for label, row in zip(labels.tolist(), images, strict=True):
            fh.write(f"{label},{','.join(cells[row])}\n")
    os.replace(tmp, path)
    return path


# --- run -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each method, interleaved")
    args = parser.parse_args()
    try:
        import pandas
    except ImportError:
        raise SystemExit(
            "pandas is missing; it is needed for the blog post's baseline only: pip install pandas"
        ) from None

    csv_path = make_csv()
    size_mb = csv_path.stat().st_size / 1e6
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    bases: dict[str, list[int]] = {m: [] for m in METHODS}
    for r in range(args.rounds):
        for method in METHODS:
            bases[method].append(run_child(method, csv_path, baseline=True)["maxrss_kib"])
            runs[method].append(run_child(method, csv_path))
            last = runs[method][-1]
            print(
                f"round {r + 1}: {method:8s} {last['seconds']:.2f} s, "
                f"peak {(last['maxrss_kib'] - bases[method][-1]) * 1024 / 1e6:,.0f} MB "
                "above imports",
                file=sys.stderr,
            )
    load_after = os.getloadavg()[0]

    figures = {}
    for method in METHODS:
        seconds = min(run["seconds"] for run in runs[method])
        peak = statistics.median(
            run["maxrss_kib"] - base for run, base in zip(runs[method], bases[method], strict=True)
        )
        figures[method] = (seconds, peak * 1024 / 1e6, runs[method][0]["held"] / 1e6)
    ours_s, ours_mb, _ = figures["siamnet"]
    rows = [
        [
            METHODS[m]["label"],
            f"{s:.2f}",
            f"{mb:,.0f}",
            f"{held:,.0f}",
            f"{s / ours_s:.1f}×",
            f"{mb / ours_mb:.1f}×",
        ]
        for m, (s, mb, held) in figures.items()
    ]
    post_s, post_mb, _ = figures["post"]
    body = "\n\n".join(
        [
            f"Loading a {ROWS:,}-row MNIST-format CSV ({size_mb:.0f} MB, no header, generated "
            f"digits-like images, seed {SEED}) on {machine()}; pandas {pandas.__version__}, "
            f"numpy {np.__version__}. Each method runs in its own process with the file already "
            "in the page cache; time is the loading alone, best of "
            f"{args.rounds} interleaved runs; peak RSS is the process's `ru_maxrss` minus that "
            "of a process that imports the same modules and loads nothing (median of the runs). "
            '"Data held" is the size of the arrays the method keeps. 1-minute load average '
            f"{load_before:.2f} before, {load_after:.2f} after.",
            table(
                [
                    "method",
                    "seconds",
                    "peak RSS MB",
                    "data held MB",
                    "time vs. siamnet",
                    "memory vs. siamnet",
                ],
                rows,
            ),
            f"The post's loading takes {post_s / ours_s:.1f}× siamnet's time and "
            f"{post_mb / ours_mb:.1f}× its peak memory. siamnet keeps the images as uint8 "
            "(47 MB for 60,000 28×28 images); the post keeps int64 values and a second, "
            "per-class copy of them (with pandas' copy-on-write, `.values` after `drop` is a "
            "view of the parsed block, which stays alive beside the copies)."
            + (
                " The peak of `pd.read_csv` alone is the post's peak: the parser's buffers, "
                "freed before the per-class copies are made, set it."
                if figures["pandas"][1] >= 0.95 * post_mb
                else ""
            ),
            f"Reproduce: `python bench/csv_loading.py --rounds {args.rounds}` (needs "
            "`pip install pandas`)",
        ]
    )
    print(body)
    write_section("CSV loading", body)


if __name__ == "__main__":
    main()
