"""Training speed when another process keeps one core busy, in one run.

The default digits run (`siamnet train --data digits`, a fixed number of epochs so every
variant does the same work) is timed on an idle machine and beside one busy process (a
Python loop, pinned to nothing: the scheduler places it), for each way of running the
training threads:

- ``spin``: two OpenMP threads that spin at each barrier before sleeping (libgomp's own
  default, ``GOMP_SPINCOUNT=300000``): what the command did before it chose a wait policy;
- ``short spin``: two threads that spin 30 times less long before they sleep;
- ``passive``: two threads that sleep at once at a barrier (``OMP_WAIT_POLICY=PASSIVE``, what
  `siamnet` sets when the environment does not choose);
- ``one thread``: ``--workers 1``.

The figure is training images/s (images seen / training seconds, both from the run's
summary.json); the slowdown is idle over busy. The target: a busy core costs at most its fair
share, ≤ 2× slower.

    python bench/busy_core.py [--epochs 3]
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

from results import machine, table, write_section

VARIANTS = {
    "spin": ({"GOMP_SPINCOUNT": "300000"}, []),
    "short spin (GOMP_SPINCOUNT=10000)": ({"GOMP_SPINCOUNT": "10000"}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "one thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--workers", "1"]),
}


def train_rate(out: Path, epochs: int, env: dict[str, str], extra: list[str]) -> float:
    """Training images/s of one fresh `siamnet train` run."""
    chosen = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    environ = {k: v for k, v in os.environ.items() if k not in chosen}
    command = [sys.executable, "-m", "siamnet", "train", "--data", "digits"]
    command += ["--epochs", str(epochs), "--patience", "0", "--out", str(out), "--overwrite"]
    command += ["--quiet", *extra]
    subprocess.run(command, check=True, env={**environ, **env}, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return summary["images_seen"] / summary["train_seconds"]


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rows, record = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (env, extra) in VARIANTS.items():
            idle = train_rate(Path(tmp) / "run", args.epochs, env, extra)
            hog = busy_process()
            try:
                time.sleep(0.5)
                busy = train_rate(Path(tmp) / "run", args.epochs, env, extra)
            finally:
                hog.kill()
                hog.wait()
            record[name] = {"idle": idle, "busy": busy}
            rows.append([name, f"{idle:,.0f}", f"{busy:,.0f}", f"{idle / busy:.2f}×"])
            print(name, record[name], flush=True)
    header = ["threads", "idle images/s", "one core busy images/s", "slowdown"]
    body = "\n\n".join(
        [
            f"`python bench/busy_core.py --epochs {args.epochs}` on {machine()}: the default "
            f"digits run, {args.epochs} epochs, training images/s on an idle machine and "
            "beside one busy Python process.",
            table(header, rows),
        ]
    )
    print(body)
    print(json.dumps(record))
    if not args.no_write:
        write_section("Training beside a busy core", body)


if __name__ == "__main__":
    main()
