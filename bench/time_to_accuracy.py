"""Time to accuracy: the blog post's recipe against siamnet's default, side by side on the same
data. Both train on all classes of the training split and are measured on the test split:
wall time and pairs seen until test pair accuracy first reaches the post's final value, and the
final test pair accuracy and 10-way one-shot accuracy of each.

Test pair accuracy is measured after every short epoch (10,000 fixed test pairs, threshold tuned
on validation pairs); the time counted is training time only. The post's side is its recipe as
`--preset seed` runs it (its model, SGD, batches of 100 independent pairs, raw pixels) on
siamnet's data path, which is faster than the post's own per-pair NumPy loop
(bench/pair_sampling.py): the ratio is the smaller for it. Every recipe trains with
`--amp auto` (bf16 autocast on a CPU with AMX tiles, float32 elsewhere), the post's included.

    python bench/time_to_accuracy.py --data digits
    python bench/time_to_accuracy.py --data fashion-mnist
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from siamnet.train import TrainConfig, fit

from results import machine, table, write_section

os.environ.setdefault("SIAMNET_NO_TENSORBOARD", "1")


def history(run_dir: Path) -> list[dict[str, float]]:
    import csv

    with open(run_dir / "metrics.csv") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def first_reaching(rows: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((r for r in rows if r["test_pair_acc"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument(
        "--default-epochs", type=int, default=30, help="epochs of 20 steps for the default recipe"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The post: 5 × 1000 batches of 100 pairs at a constant learning rate, cut into 50
        # epochs of 100 batches so that test accuracy is seen along the way.
        post = TrainConfig(
            data=args.data,
            preset="seed",
            epochs=50,
            steps_per_epoch=100,
            log_every=0,
            out=str(work / "post"),
            quiet=True,
            device="cpu",
        )
        post_summary = fit(post)
        post_rows = history(work / "post")
        target = post_rows[-1]["test_pair_acc"]
        contenders = {
            "siamnet `--preset fast` (seed-cnn + bce, pairs in 10×10 batches, Adam)": {
                "preset": "fast",
                "epochs": 25,  # the preset's 500 steps, in epochs of 20 like the others
            },
            "siamnet default (conv4 + proto)": {"rotate_classes": False},
            "conv4 + bce, Adam (the post's objective)": {"loss": "bce", "rotate_classes": False},
            "seed-cnn + bce, Adam, standardised input (the post's model and objective)": {
                "model": "seed-cnn",
                "loss": "bce",
                "rotate_classes": False,
            },
        }
        runs = [("post (`--preset seed`)", post_summary, post_rows)]
        for name, overrides in contenders.items():
            # eval_classes=None and data given: nothing held out, as in the post
            settings = {"epochs": args.default_epochs, "steps_per_epoch": 20, **overrides}
            cfg = TrainConfig(
                data=args.data,
                eval_classes=None,
                out=str(work / "ours"),
                overwrite=True,
                quiet=True,
                device="cpu",
                **settings,
            )
            runs.append((name, fit(cfg), history(work / "ours")))
    rows = []
    for name, summary, hist in runs:
        hit = first_reaching(hist, target)
        rows.append(
            [
                name,
                f"{hit['seconds']:.1f}" if hit else "not reached",
                f"{int(hit['images_seen']):,}" if hit else "-",
                f"{hist[-1]['seconds']:.1f}",
                f"{hist[-1]['test_pair_acc']:.4f}",
                f"{summary['test_pair_acc']:.4f}",
                "{accuracy:.3f} ± {ci95:.3f}".format(**summary["test_oneshot"]),
            ]
        )
        print(rows[-1], flush=True)
    post_hit = first_reaching(post_rows, target)
    ratios = []
    for name, _, hist in runs[1:]:
        hit = first_reaching(hist, target)
        ratio = post_hit["seconds"] / hit["seconds"] if hit else None
        ratios.append(f"{name}: " + (f"{ratio:.1f}× sooner" if ratio else "not reached"))
    body = (
        f"Data `{args.data}`, all classes trained, measured on its test split. Target: the post's "
        f"final test pair accuracy, {target:.4f}; in training time, "
        + "; ".join(ratios)
        + " (the goal is 10×). Per-epoch test accuracy uses "
        f"the threshold tuned on validation pairs at that epoch; the final columns use the best "
        f"checkpoint. Measured on {machine()}.\n\n"
        + table(
            [
                "recipe",
                "s to post's final acc",
                "images to it",
                "total train s",
                "last-epoch test pair acc",
                "best-checkpoint test pair acc",
                "10-way 1-shot (test)",
            ],
            rows,
        )
        + f"\n\nReproduce: `python bench/time_to_accuracy.py --data {args.data}`"
    )
    write_section(f"Time to accuracy: {args.data}", body)


if __name__ == "__main__":
    main()
