"""Episodes against proxies, with and without test-time centring, through the command line.

Each loss trains the default backbone (conv4-map, rotated classes, bf16 where the CPU has it)
for the same number of training images (the prototypical run's, so every variant sees as many
images; a proxy batch is `--batch-size` images), with a cosine schedule over its planned steps
and no early stopping, so every run spends its whole length. Each run is then scored by
`siamnet evaluate` on classes never seen in training, with centring off and on (one
checkpoint: centring only changes how embeddings are scored). Results are appended to a JSON
lines file as they come, so a long comparison can be stopped and resumed.

    python bench/proxy_recipes.py --data digits --epochs 20
    python bench/proxy_recipes.py --data fashion-mnist --eval-classes 6,7,8,9 --epochs 20
    python bench/proxy_recipes.py --data glyphs --epochs 15 --ways 5 20
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

LOSSES = ["proto", "normsoftmax", "cosface", "arcface"]
PROXY_BATCH = 256


def siamnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "siamnet", *args], check=True, capture_output=True, text=True
    )


def train(args: argparse.Namespace, loss: str, out: Path, steps: int) -> dict:
    command = ["train", "--data", args.data, "--loss", loss, "--out", str(out), "--overwrite"]
    command += ["--epochs", str(args.epochs), "--steps-per-epoch", str(steps)]
    command += ["--schedule", "cosine", "--patience", "0", "--time-budget", "0", "--quiet"]
    command += ["--workers", str(args.threads)]
    if args.eval_classes:
        command += ["--eval-classes", args.eval_classes]
    if loss != "proto":
        command += ["--batch-size", str(PROXY_BATCH)]
    siamnet(*command)
    return json.loads((out / "summary.json").read_text())


def evaluate(args: argparse.Namespace, run: Path, centring: str) -> dict:
    command = ["evaluate", str(run), "--json", "-", "--shots", "1", "--centring", centring]
    command += ["--ways", *map(str, args.ways)]
    return json.loads(siamnet(*command).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--eval-classes", default="")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="proto's steps per epoch")
    parser.add_argument("--ways", type=int, nargs="+", default=[4])
    parser.add_argument("--threads", type=int, default=0, help="--workers of each run")
    parser.add_argument("--runs", default="runs/proxy-recipes")
    parser.add_argument("--stage", choices=["train", "evaluate", "both"], default="both")
    parser.add_argument("--results", default="bench/.proxy_recipes.jsonl")
    args = parser.parse_args()
    root = Path(args.runs) / args.data.replace("/", "_")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    images = None
    for loss in LOSSES:
        out = root / loss
        if images is None:
            steps = args.steps
        else:  # as many training images as the prototypical run saw
            steps = max(1, math.ceil(images / (args.epochs * PROXY_BATCH)))
        if args.stage in ("train", "both"):
            summary = train(args, loss, out, steps)
            print(loss, "trained", summary["train_seconds"], "s", flush=True)
        summary = json.loads((out / "summary.json").read_text())
        if loss == "proto":
            images = summary["images_seen"]
        if args.stage == "train":
            continue
        for centring in ("off", "on"):
            report = evaluate(args, out, centring)
            row = {
                "data": args.data,
                "eval_classes": args.eval_classes,
                "loss": loss,
                "centring": centring,
                "epochs": args.epochs,
                "steps_per_epoch": steps,
                "images_seen": summary["images_seen"],
                "train_seconds": summary["train_seconds"],
                "one_shot": report["one_shot"],
                "one_shot_pixels": report.get("one_shot_pixels"),
                "retrieval": report.get("retrieval"),
            }
            with results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            accs = [
                f"{r['protocol']} {r['ways']}-way {r['accuracy']:.4f}±{r['ci95']:.4f}"
                for r in report["one_shot"]
                if r["shots"] == 1 and r["scoring"] == "mean"
            ]
            print(loss, centring, summary["train_seconds"], *accs, flush=True)


if __name__ == "__main__":
    main()
