"""Which recipe generalises to classes never seen in training? Each recipe trains for the same
wall-clock budget on the training classes; all are scored by 1-shot accuracy (95% CI) on the
held-out classes, beside pair accuracy. Nearest neighbour on raw pixels is the floor to beat.

    python bench/recipes.py --budget 120          # digits and (if installed) fashion-mnist
    python bench/recipes.py --data fashion-mnist --budget 300
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from siamnet.data.registry import load_dataset
from siamnet.data.splits import split_by_class
from siamnet.evaluate import few_shot_accuracy
from siamnet.models.heads import DistanceHead
from siamnet.models.siamese import SiameseNet
from siamnet.train import TrainConfig, fit

from results import machine, table, write_section

os.environ.setdefault("SIAMNET_NO_TENSORBOARD", "1")

RECIPES: dict[str, dict] = {
    "post (seed-cnn, bce, SGD, raw pixels)": {"preset": "seed", "log_every": 0},
    "conv4 + bce, Adam": {"model": "conv4", "loss": "bce", "rotate_classes": False},
    "conv4 + contrastive, Adam": {"model": "conv4", "loss": "contrastive", "rotate_classes": False},
    "conv4 + triplet (semi-hard), Adam": {
        "model": "conv4",
        "loss": "triplet",
        "rotate_classes": False,
    },
    "conv4 + proto, Adam": {"model": "conv4", "loss": "proto", "rotate_classes": False},
    "siamnet default: conv4 + proto, rotated classes": {},
}


def steps_for_budget(base: dict, budget: float, epochs: int, probe_dir: Path) -> int:
    """Steps per epoch that fill `budget` seconds, from a short timed probe run."""
    probe = TrainConfig(
        **{**base, "epochs": 1, "steps_per_epoch": 20, "out": str(probe_dir), "overwrite": True}
    )
    start = time.perf_counter()
    summary = fit(probe)
    total = time.perf_counter() - start
    per_step = summary["train_seconds"] / 20
    overhead = max(0.0, total - summary["train_seconds"])  # validation + final evaluation
    return max(5, int((budget - overhead * epochs * 0.5) / (per_step * epochs)))


def pixel_nearest_neighbour(data: str, eval_classes: list[str]) -> dict:
    ds = load_dataset(data)
    pool = ds.train
    _, unseen = split_by_class(pool, eval_classes=eval_classes)
    flat = unseen.images.flatten(1).float()
    model = SiameseNet(torch.nn.Identity(), DistanceHead())
    return few_shot_accuracy(
        model, flat, unseen.labels, ways=len(eval_classes), shots=1, episodes=1000, seed=4
    ).to_dict()


def run(data: str, eval_classes: list[str], budget: float, epochs: int, work: Path) -> list[list]:
    rows = []
    nn = pixel_nearest_neighbour(data, eval_classes)
    rows.append(
        [
            "nearest neighbour, raw pixels",
            "-",
            "-",
            "-",
            f"{nn['accuracy']:.3f} ± {nn['ci95']:.3f}",
            "-",
            "-",
        ]
    )
    print(rows[-1], flush=True)
    for name, overrides in RECIPES.items():
        base = {
            "data": data,
            "eval_classes": eval_classes,
            "quiet": True,
            "device": "cpu",
            "seed": 0,
            **overrides,
        }
        steps = steps_for_budget(base, budget, epochs, work / "probe")
        cfg = TrainConfig(
            **{
                **base,
                "epochs": epochs,
                "steps_per_epoch": steps,
                "out": str(work / "run"),
                "overwrite": True,
            }
        )
        start = time.perf_counter()
        s = fit(cfg)
        wall = time.perf_counter() - start
        o = s["oneshot"]
        rows.append(
            [
                name,
                f"{epochs}×{steps}",
                f"{s['train_seconds']:.0f}",
                f"{wall:.0f}",
                f"{o['accuracy']:.3f} ± {o['ci95']:.3f}",
                f"{s.get('test_pair_acc', float('nan')):.3f}",
                f"{s['unseen_pair_acc']:.3f}",
            ]
        )
        print(rows[-1], flush=True)
        (work / f"{data}-{name[:12]}.json").write_text(json.dumps(s))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", action="append", help="data sets (default: digits, fashion-mnist)"
    )
    parser.add_argument("--eval-classes", default="6,7,8,9")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of training each")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    datasets = args.data or ["digits", "fashion-mnist"]
    eval_classes = args.eval_classes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for data in datasets:
            try:
                load_dataset(data)
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                print(f"skipping {data}: {exc}")
                continue
            load_before = os.getloadavg()[0]
            rows = run(data, eval_classes, args.budget, args.epochs, Path(tmp))
            load_after = os.getloadavg()[0]
            body = (
                f"Data `{data}`, trained on all classes but {args.eval_classes}; "
                f"{len(eval_classes)}-way 1-shot accuracy on those held-out classes over 1,000 "
                f"seeded episodes (± 95% CI). Each recipe trains for about {args.budget:.0f} s "
                f"(steps per epoch set by a timed probe); wall time includes per-epoch "
                f"validation and the final evaluation; train s is the training time measured. "
                f"Measured "
                f"on {machine()}; 1-minute load average {load_before:.2f} before, "
                f"{load_after:.2f} after (the timed probe is only as good as a quiet machine).\n\n"
                + table(
                    [
                        "recipe",
                        "epochs × steps",
                        "train s",
                        "wall s",
                        f"{len(eval_classes)}-way 1-shot (unseen)",
                        "test pair acc (seen)",
                        "pair acc (unseen)",
                    ],
                    rows,
                )
                + "\n\nReproduce: "
                + f"`python bench/recipes.py --data {data} --budget {args.budget:.0f}`"
            )
            write_section(f"Recipes on held-out classes: {data}", body)


if __name__ == "__main__":
    main()
