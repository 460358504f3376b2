"""The blog post "Siamese Networks in PyTorch", step by step, through siamnet's library.

The post loads MNIST from CSV files, looks at a batch of pairs, trains its small CNN with an
L1 head and binary cross-entropy (SGD, lr 0.001, momentum 0.1, 5 epochs of 1,000 batches of
100 pairs, raw pixel values), then looks at the model's predictions on test pairs. Each step
below is the same step with siamnet:

    python examples/blog_post.py --out blog_post                      # built-in digits
    python examples/blog_post.py --csv mnist_train.csv --test-csv mnist_test.csv
    python examples/blog_post.py --epochs 1 --steps 50                # a quick run

It writes ``pairs.png`` (the post's first figure), ``predictions.png`` (its second) and the
training run (``run/``: checkpoints, metrics.csv, curves.png) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from siamnet.checkpoint import load_checkpoint
from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import sample_pairs
from siamnet.data.registry import load_dataset
from siamnet.plots.pairs import plot_pairs, plot_predictions
from siamnet.train import TrainConfig, fit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--csv", help="training CSV (label, then 784 pixels a row); default: the built-in digits"
    )
    p.add_argument(
        "--test-csv",
        help="test CSV in the same format (default: the data's test split, if it has one)",
    )
    p.add_argument("--out", default="blog_post", help="folder for the figures and the run")
    p.add_argument("--epochs", type=int, help="epochs (the post: 5)")
    p.add_argument("--steps", type=int, help="batches per epoch (the post: 1000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def load_data(args: argparse.Namespace) -> tuple[LabeledImages, LabeledImages]:
    """Step 1: the training and test images (uint8 [N, 1, 28, 28]) and their labels."""
    dataset = load_dataset(args.csv or "digits")
    test = load_dataset(args.test_csv).train if args.test_csv else dataset.test
    train = dataset.train
    print(
        f"training: {len(train):,} images of {train.num_classes} classes "
        f"{list(train.image_size)} from {dataset.name}"
    )
    if test is None:
        print("no test split: the predictions below use training images")
        test = train
    else:
        print(f"test: {len(test):,} images")
    return train, test


def look_at_pairs(train: LabeledImages, out: Path, seed: int) -> Path:
    """Step 2: a batch of 10 pairs as the post draws them: 5 different, then 5 same."""
    generator = torch.Generator().manual_seed(seed)
    left, right, target = sample_pairs(train, 10, generator)
    path = plot_pairs(left, right, target > 0.5, out / "pairs.png", title="a batch of pairs")
    print(f"wrote {path}")
    return path


def train_like_the_post(args: argparse.Namespace, out: Path) -> Path:
    """Step 3: the post's recipe (``preset="seed"``), shortened by --epochs/--steps."""
    config = TrainConfig(
        preset="seed",
        data=args.csv or "digits",
        test_data=args.test_csv,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        out=str(out / "run"),
        overwrite=True,
        device=args.device,
        seed=args.seed,
    )
    summary = fit(config)
    print(
        f"test pair accuracy {summary.get('test_pair_acc', float('nan')):.3f} "
        f"(threshold {summary['threshold']:.3f} from validation pairs)"
    )
    return out / "run"


def look_at_predictions(run: Path, test: LabeledImages, out: Path, seed: int) -> Path:
    """Step 4: the model's verdict on 10 test pairs at probability 0.5, as in the post."""
    ckpt = load_checkpoint(run)
    generator = torch.Generator().manual_seed(seed + 1)
    left, right, target = sample_pairs(test, 10, generator)
    probability = ckpt.model.score(left, right)  # sigmoid of the L1 head: P(same)
    predicted = probability > 0.5
    right_ones = int((predicted == (target > 0.5)).sum())
    print(f"{right_ones}/10 test pairs right at probability 0.5")
    path = plot_predictions(
        left,
        right,
        target > 0.5,
        probability,
        predicted,
        out / "predictions.png",
        title="predictions on test pairs",
    )
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    step("1. load the data")
    train, test = load_data(args)
    step("2. look at a batch of pairs")
    look_at_pairs(train, out, args.seed)
    step("3. train the post's network (seed-cnn, L1 head, BCE, SGD)")
    run = train_like_the_post(args, out)
    step("4. look at the predictions")
    look_at_predictions(run, test, out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
