"""A recipe search for one-shot accuracy on classes never seen in training.

Every variant changes one thing of the default recipe (conv4-map + prototypical loss on 60-way
1-shot 5-query episodes, capped at the training classes; rotated classes where there are at
least 20; plateau schedule; early stopping on validation one-shot accuracy) and trains with the
default stopping rules in steps, not seconds (at most ``--epochs`` × 100 steps, patience 6), so
that what a variant learns does not depend on how busy the machine is. Each trained model is
then scored on the held-out classes (never used for any choice) three ways, the last two costing
nothing at training: as trained; with embeddings centred on the mean embedding of the training
images and scaled to unit length (SimpleShot, Wang et al. 2019); and with test-time
augmentation, each image's embedding averaged over itself and 7 seeded affine copies. Nearest
neighbour on raw pixels is the floor to beat.

    python bench/recipe_search.py --data digits
    python bench/recipe_search.py --data fashion-mnist
    python bench/recipe_search.py --data bench/.data/glyphs --eval-classes '' --image-size 28 \
        --ways 20 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from siamnet.checkpoint import load_checkpoint
from siamnet.data.augment import AffineRanges, random_affine
from siamnet.evaluate import embed_images, few_shot_accuracy
from siamnet.models.heads import DistanceHead
from siamnet.models.siamese import SiameseNet
from siamnet.train import TrainConfig, fit, prepare_data

from results import machine, table, write_section

os.environ.setdefault("SIAMNET_NO_TENSORBOARD", "1")

#: One change of the default recipe each (an empty dict is the default itself).
VARIANTS: dict[str, dict] = {
    "default (conv4-map, 60-way 1-shot episodes, plateau)": {},
    "20-way training episodes (the previous default)": {"ways": 20},
    "conv4, 64-d embedding (the previous default)": {"model": "conv4"},
    "+ affine augmentation": {"augment": "affine"},
    "+ rotated classes": {"rotate_classes": True},
    "without rotated classes": {"rotate_classes": False},
    "10-way 5-shot training episodes": {"ways": 10, "shots": 5},
    "5-way training episodes": {"ways": 5},
    "cosine schedule over all epochs, no early stopping": {"schedule": "cosine", "patience": 0},
}


def applies(overrides: dict, train_classes: int, rotates_by_default: bool) -> bool:
    """Whether a variant trains otherwise than the default on data with `train_classes`
    classes: the default rotates classes only where validation holds out classes (at least 20),
    and episodes are capped at the training classes."""
    default = TrainConfig().resolved()
    effective = {"rotate_classes": rotates_by_default, "ways": min(default.ways, train_classes)}
    for key, value in overrides.items():
        if key == "ways":
            value = min(value, train_classes)
        if value != effective.get(key, getattr(default, key)):
            return True
    return not overrides


def centred_unit(emb: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Embeddings ``[N, D]`` minus `centre` ``[D]``, scaled to unit length."""
    return torch.nn.functional.normalize(emb - centre, dim=1)


@torch.no_grad()
def augmented_embeddings(model: SiameseNet, images: torch.Tensor, copies: int = 7) -> torch.Tensor:
    """Mean embedding ``[N, D]`` of each uint8 image ``[N, C, H, W]`` and `copies` seeded
    affine warps of it (every warp applied, small ranges)."""
    ranges = AffineRanges(rotation=8.0, shear=0.15, scale=(0.9, 1.1), translate=1.5, probability=1)
    generator = torch.Generator().manual_seed(0)
    total = embed_images(model, images, device=torch.device("cpu"))
    for _ in range(copies):
        warped = random_affine(images, generator, ranges)
        total += embed_images(model, warped, device=torch.device("cpu"))
    return total / (copies + 1)


def score(features: torch.Tensor, labels: torch.Tensor, ways: int, seed: int) -> dict:
    """N-way 1-shot accuracy of nearest neighbour (Euclidean) on `features` ``[N, D]``."""
    model = SiameseNet(torch.nn.Identity(), DistanceHead())
    return few_shot_accuracy(
        model, features, labels, ways=ways, shots=1, episodes=1000, seed=seed
    ).to_dict()


@torch.no_grad()
def unseen_scores(checkpoint: Path, cfg: TrainConfig, ways: int) -> tuple[dict, dict, dict]:
    """1-shot accuracy on the run's unseen classes: as trained, centred + unit length, and
    with test-time augmentation."""
    data = prepare_data(cfg.resolved())
    model = load_checkpoint(checkpoint, device="cpu").model
    train_emb = embed_images(model, data.train.images, device=torch.device("cpu"))
    emb = embed_images(model, data.unseen.images, device=torch.device("cpu"))
    labels, seed = data.unseen.labels, cfg.seed + 4
    plain = few_shot_accuracy(
        model, emb, labels, ways=ways, shots=1, episodes=1000, seed=seed
    ).to_dict()
    centred = score(centred_unit(emb, train_emb.mean(0)), labels, ways, seed)
    tta = few_shot_accuracy(
        model,
        augmented_embeddings(model, data.unseen.images),
        labels,
        ways=ways,
        shots=1,
        episodes=1000,
        seed=seed,
    ).to_dict()
    return plain, centred, tta


def pixel_baseline(cfg: TrainConfig, ways: int) -> dict:
    data = prepare_data(cfg.resolved())
    return score(data.unseen.images.flatten(1).float(), data.unseen.labels, ways, cfg.seed + 4)


def fmt(r: dict) -> str:
    return f"{r['accuracy']:.3f} ± {r['ci95']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--eval-classes", default="6,7,8,9", help="'' for the data's own split")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--ways", type=int, default=4, help="N of the N-way 1-shot test")
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs")
    parser.add_argument("--only", action="append", help="run only variants starting with this")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = {
        "data": args.data,
        "eval_classes": args.eval_classes.split(",") if args.eval_classes else None,
        "image_size": (args.image_size, args.image_size) if args.image_size else None,
        "quiet": True,
        "device": "cpu",
        "seed": 0,
        "epochs": args.epochs,
        "steps_per_epoch": 100,
        "patience": 6,
        "time_budget": 0,
    }
    rows = []
    nn = pixel_baseline(TrainConfig(**base).resolved(), args.ways)
    default_data = prepare_data(TrainConfig(**base).resolved())
    train_classes = default_data.train.num_classes
    rotates_by_default = default_data.val_protocol == "held-out classes"
    rows.append(["nearest neighbour, raw pixels", "-", "-", "-", fmt(nn), "-", "-"])
    print(rows[-1], flush=True)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in VARIANTS.items():
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            if not applies(overrides, train_classes, rotates_by_default):
                continue
            run = Path(tmp) / "run"
            cfg = TrainConfig(**{**base, **overrides, "out": str(run), "overwrite": True})
            start = time.perf_counter()
            s = fit(cfg)
            wall = time.perf_counter() - start
            out = Path(__file__).parent / ".data" / "recipe_search"
            out.mkdir(parents=True, exist_ok=True)
            tag = f"{Path(args.data).name}-{list(VARIANTS).index(name)}"
            shutil.copy(run / "best.pt", out / f"{tag}.pt")
            plain, centred, tta = unseen_scores(out / f"{tag}.pt", cfg, args.ways)
            rows.append(
                [
                    name,
                    f"{s['best_epoch']}/{s['epochs_run']}, {s['stopped_by']}",
                    f"{s['train_seconds']:.0f}",
                    f"{wall:.0f}",
                    fmt(plain),
                    fmt(centred),
                    fmt(tta),
                ]
            )
            print(rows[-1], flush=True)
            (out / f"{tag}.json").write_text(
                json.dumps(
                    {"variant": name, "summary": s, "plain": plain, "centred": centred, "tta": tta}
                )
            )
    load_after = os.getloadavg()[0]
    body = (
        f"Data `{args.data}`, unseen classes "
        f"{args.eval_classes or 'of its own evaluation split'}; {args.ways}-way 1-shot accuracy "
        "on them over 1,000 seeded episodes (± 95% CI), from `best.pt` (chosen by validation "
        "one-shot accuracy, which never sees the unseen classes). Every variant trains with the "
        f"default stopping rules counted in steps: at most {args.epochs} epochs of 100 steps, "
        "stopped after 6 epochs without better validation one-shot accuracy; *centred + unit* "
        "scores the same embeddings centred on the mean training embedding and scaled to unit "
        "length, *TTA* averages each image's embedding over it and 7 seeded affine copies. "
        f"{machine()}; 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after."
    )
    write_section(
        f"Recipe search: {Path(args.data).name}",
        body
        + "\n\n"
        + table(
            [
                "variant",
                "best/last epoch, stopped by",
                "train s",
                "wall s",
                f"{args.ways}-way 1-shot",
                "centred + unit",
                "TTA",
            ],
            rows,
        )
        + "\n\nReproduce: `python bench/recipe_search.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in (
                ("data", args.data),
                ("eval_classes", f"'{args.eval_classes}'"),
                ("image_size", args.image_size),
                ("ways", args.ways),
                ("epochs", args.epochs),
            )
            if v is not None
        )
        + "`",
    )


if __name__ == "__main__":
    main()
