"""The data path of a folder of photographs read from disk: images per second decoded (and
augmented) by 0, 1 and 2 loader workers, against the training step of the photo-size model, and
how long that step waits for its data, in one run.

A folder of generated JPEGs (384x384 colour, by default 2,000 in 50 classes; made once under
``bench/.data``) is trained at ``--image-size`` (96) with ``--cache off``, so that every batch
is decoded by the loader (`siamnet.train.step.BatchFeed`, `siamnet.data.streaming`). Measured,
side by side:

- decoding: the feed's batches, drawn by the default recipe's sampler and decoded by 0, 1 and
  2 workers, with nothing else running (images/s; "+ photo augmentation": each batch also goes
  through ``--augment photo`` in the training process);
- the step alone: the same steps on the same images held in memory (``--cache on``), the
  model's forward, backward and optimiser step (images/s and s/step);
- training fed by the loader: the steps with 0, 1 and 2 workers, and the share of the time the
  step waits for its next batch (target: under 10% with 2 workers).

    python bench/data_path.py                                   # 2,000 images, 30 steps each
    python bench/data_path.py --images 200 --steps 3 --no-write --json out.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import siamnet.images
from siamnet.data.augment import batch_augmentation
from siamnet.objectives import ObjectiveSettings, TrainingModel, get_objective
from siamnet.train import TrainConfig
from siamnet.train.data import prepare_data
from siamnet.train.model import build_training_model, photo_episodes
from siamnet.train.optim import build_optimizer
from siamnet.train.step import BatchFeed, BatchMaker, compute_loss

from results import machine, table, write_section

DATA_DIR = Path(__file__).with_name(".data")
WORKERS = (0, 1, 2)
TARGET_WAIT = 0.10


def make_photos(root: Path, images: int, classes: int, side: int = 384) -> Path:
    """`images` JPEGs of ``side x side`` colour pixels in `classes` class folders (kept when
    already there): each class a hue, each image a gradient and noise."""
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 80, side)[None, :, None]
    for i in range(images):
        c = i % classes
        folder = root / f"class{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(c * 67) % 256, (c * 151) % 256, (c * 29 + 90) % 256], np.float64)
        noise = rng.normal(0, 20, (side // 8, side // 8, 3)).repeat(8, 0).repeat(8, 1)
        pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    done.touch()
    return root


def setup(folder: Path, args: argparse.Namespace, cache: str, workers: int, out: str):
    """The run's config, data, model, optimiser and batch maker, as `siamnet.train.fit` makes
    them (the default recipe on photographs)."""
    cfg = TrainConfig(
        data=str(folder),
        image_size=(args.image_size, args.image_size),
        cache=cache,
        loader_workers=workers,
        steps_per_epoch=args.steps,
        augment=args.augment,
        device="cpu",
        out=out,
        quiet=True,
    ).resolved()
    data = prepare_data(cfg)
    cfg = photo_episodes(cfg, data, episodes_given=False)  # as `siamnet.train.fit` does
    objective = get_objective(cfg.loss)
    model = build_training_model(cfg, data, torch.Generator().manual_seed(0), objective)
    own = objective.training_parameters(
        ObjectiveSettings.of(cfg), data.train, model.backbone.out_dim, torch.Generator()
    )
    trainable = TrainingModel(model, own)
    optimizer = build_optimizer(cfg, model, own)
    return cfg, data, trainable, optimizer, BatchMaker(cfg, data.train, objective)


def decode_rate(cfg, data, maker, workers: int, augment: bool) -> dict[str, float]:
    """Images per second the feed delivers with `workers` (and the photo augmentation)."""
    feed = BatchFeed(
        replace(cfg, loader_workers=workers), data.train, maker, torch.Generator().manual_seed(1),
        torch.device("cpu"),
    )  # fmt: skip
    warm = feed.epoch()
    next(warm)  # start the workers before the clock
    warm.close()
    step_augment = batch_augmentation("photo", torch.Generator().manual_seed(2))
    images = 0
    start = time.perf_counter()
    for _, rows, decoded in feed.epoch():
        if augment:
            step_augment(decoded.float())
        images += len(rows)
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds}


def decode_whole_rate(cfg, data, maker) -> dict[str, float]:
    """`decode_rate` with 0 workers and every JPEG decoded whole (no reduced-scale decoding):
    the baseline of `siamnet.images.decode_scale`."""
    saved = siamnet.images.decode_scale
    siamnet.images.decode_scale = lambda *_: None
    try:
        return decode_rate(cfg, data, maker, 0, False)
    finally:
        siamnet.images.decode_scale = saved


def say(line: str) -> None:
    """A progress line on stderr."""
    print(line, file=sys.stderr, flush=True)


def train_steps(cfg, data, model, optimizer, maker, workers: int | None) -> dict[str, float]:
    """`cfg.steps_per_epoch` training steps fed by `workers` loader workers (None: the images
    held in memory), with the time spent waiting for each batch."""
    feed = BatchFeed(
        replace(cfg, loader_workers=workers or 0), data.train, maker,
        torch.Generator().manual_seed(1), torch.device("cpu"),
    )  # fmt: skip
    labels = data.train.labels
    augment = batch_augmentation(cfg.augment, torch.Generator().manual_seed(2))
    batches = feed.epoch()
    if workers:
        first = feed.epoch()
        next(first)  # start the workers before the clock
        first.close()
    waited = images = 0.0
    start = time.perf_counter()
    while True:
        asked = time.perf_counter()
        try:
            batch, rows, decoded = next(batches)
        except StopIteration:
            break
        waited += time.perf_counter() - asked
        optimizer.zero_grad(set_to_none=True)
        loss, _ = compute_loss(cfg, model, batch, decoded, labels, augment, maker.objective, rows)
        loss.backward()
        optimizer.step()
        images += maker.objective.images_in(batch)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "seconds_per_step": seconds / cfg.steps_per_epoch,
        "images_per_s": images / seconds,
        "wait_fraction": waited / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs in the folder")
    parser.add_argument("--classes", type=int, default=50, help="class folders")
    parser.add_argument("--image-size", type=int, default=96, help="the training size")
    parser.add_argument("--steps", type=int, default=30, help="steps timed per row")
    parser.add_argument("--augment", default="photo", help="the training augmentation")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    folder = make_photos(
        DATA_DIR / f"photos_{args.images}_{args.classes}", args.images, args.classes
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, data, model, optimizer, maker = setup(folder, args, "off", 2, tmp + "/run")
        decoding = {
            w: {a: decode_rate(cfg, data, maker, w, a) for a in (False, True)} for w in WORKERS
        }
        whole = decode_whole_rate(cfg, data, maker)
        say(f"decoding: {decoding}; whole: {whole}")
        _, held, model_h, optimizer_h, maker_h = setup(folder, args, "on", 0, tmp + "/run")
        step_alone = train_steps(cfg, held, model_h, optimizer_h, maker_h, None)
        say(f"step alone: {step_alone}")
        fed = {}
        for w in WORKERS:
            fed[w] = train_steps(cfg, data, model, optimizer, maker, w)
            say(f"fed by {w} workers: {fed[w]}")
    rows = [
        [
            f"{w} loader workers",
            f"{decoding[w][False]['images_per_s']:,.0f}",
            f"{decoding[w][True]['images_per_s']:,.0f}",
            f"{fed[w]['images_per_s']:,.0f}",
            f"{fed[w]['wait_fraction']:.1%}",
        ]
        for w in WORKERS
    ]
    rows.append(
        ["images held in memory (--cache on)", "-", "-", f"{step_alone['images_per_s']:,.0f}", "0%"]
    )
    rows.append(
        ["0 loader workers, JPEGs decoded whole", f"{whole['images_per_s']:,.0f}", "-", "-", "-"]
    )
    header = [
        "feed",
        "decoded img/s",
        "decoded + photo augmentation img/s",
        "training img/s",
        "step waits for data",
    ]
    print(table(header, rows))
    record = {
        "images": args.images,
        "image_size": args.image_size,
        "steps": args.steps,
        "model": cfg.model if isinstance(cfg.model, str) else type(cfg.model).__name__,
        "decoding": {str(w): {str(a): v for a, v in d.items()} for w, d in decoding.items()},
        "decoded_whole_0_workers": whole,
        "step_in_memory": step_alone,
        "training_fed": {str(w): v for w, v in fed.items()},
        "target_wait_fraction_2_workers": TARGET_WAIT,
        "machine": machine(),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2))
    if not args.no_write:
        met = fed[2]["wait_fraction"] < TARGET_WAIT
        body = (
            f"{args.images:,} generated JPEGs of 384x384 in {args.classes} classes, trained at "
            f"{args.image_size}x{args.image_size} with --cache off by the default recipe on "
            f"photographs and --augment {args.augment}; {args.steps} steps a row. The step "
            f"alone (images in memory): {step_alone['seconds_per_step']:.3f} s. With 2 loader "
            f"workers the step waits for data {fed[2]['wait_fraction']:.1%} of the time "
            f"(target under {TARGET_WAIT:.0%}: {'met' if met else 'not met'}). Measured on "
            f"{machine()}.\n\n" + table(header, rows) + "\n\nReproduce: `python bench/data_path.py`"
        )
        write_section("Data path of photographs read from disk", body)


if __name__ == "__main__":
    main()
