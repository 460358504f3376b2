"""`siamnet train`: train a Siamese network (argument parsing only; see siamnet.train)."""

from __future__ import annotations

import argparse
import json
import sys

from siamnet.cli.common import (
    add_quiet,
    add_verb,
    parse_duration,
    parse_image_size,
    parse_name_list,
)
from siamnet.presets import PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "train",
        "Train a Siamese network and report pair and one-shot accuracy.",
        "siamnet train --out runs/digits            # built-in digits, 6-9 held out\n"
        "  siamnet train --data mnist_train.csv --test-data mnist_test.csv --preset seed "
        "--out runs/post\n"
        "  torchrun --nproc_per_node=2 -m siamnet train --out runs/ddp   # data-parallel",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--data",
        help="data SPEC: digits, mnist, fashion-mnist, omniglot, or a path "
        "(default: digits with classes 6,7,8,9 held out)",
    )
    d.add_argument("--test-data", help="a separate test SPEC (e.g. the post's mnist_test.csv)")
    d.add_argument(
        "--eval-classes",
        type=parse_name_list,
        help="comma-separated class names held out of training for one-shot testing",
    )
    d.add_argument("--eval-fraction", type=float, help="fraction of classes held out (seeded)")
    d.add_argument("--image-size", type=parse_image_size, help="HxW to resize images to")
    m = p.add_argument_group("model and objective")
    m.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named recipe; flags override it "
        "(seed: the blog post exactly; koch: Koch et al. 2015)",
    )
    m.add_argument("--model", help="seed-cnn, koch, conv4, conv4-map or resnet18")
    m.add_argument(
        "--pretrained",
        nargs="?",
        const="imagenet",
        metavar="PATH",
        help="resnet18 only: start from torchvision's ImageNet weights, read from torch's hub "
        "cache (never downloaded) or from PATH; inputs get ImageNet's normalisation",
    )
    m.add_argument("--loss", choices=["bce", "contrastive", "triplet", "proto"])
    m.add_argument("--margin", type=float, help="margin of contrastive/triplet loss")
    m.add_argument(
        "--mining",
        choices=["semihard", "hard"],
        default="semihard",
        help="triplet negatives mined in each batch",
    )
    m.add_argument(
        "--pairs",
        choices=["sampled", "batch"],
        help="bce and contrastive: pairs drawn one by one as in the blog post (sampled), or every "
        "pair inside P×K batches of --batch-size images (batch; each image embedded once "
        "serves in many pairs)",
    )
    m.add_argument(
        "--examples-per-class",
        type=int,
        help="K of P×K batches (triplet, --pairs batch; default 4)",
    )
    m.add_argument(
        "--ways",
        type=int,
        help="classes per training episode (proto; default recipe 60, capped at the training "
        "classes; otherwise 20)",
    )
    m.add_argument("--shots", type=int, default=1, help="support images per class (proto)")
    m.add_argument("--queries", type=int, default=5, help="query images per class (proto)")
    m.add_argument(
        "--rotate-classes",
        action=argparse.BooleanOptionalAction,
        help="add each training class rotated by 90, 180 and 270 degrees as three new "
        "classes (the Omniglot practice; by default on with --loss proto when the data has "
        "at least 20 training classes)",
    )
    m.add_argument(
        "--temperature",
        choices=["learned", "fixed"],
        default="learned",
        help="proto: a learned or a fixed (1) softmax temperature",
    )
    m.add_argument(
        "--normalize",
        choices=["raw", "unit", "standard"],
        help="input scaling: raw 0..255, unit 0..1, standard per-channel mean/std",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--epochs",
        type=int,
        help="number of epochs (the default recipe: at most 100, ended earlier by --patience or "
        "--time-budget; given by hand, exactly this many unless those are given too)",
    )
    o.add_argument("--steps-per-epoch", type=int)
    o.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="SECONDS",
        help="stop before an epoch that would end past this much wall time: 600, 90s, 10m, 1h; "
        "0 for none (default recipe: 10m, unless --epochs or --steps-per-epoch is given)",
    )
    o.add_argument(
        "--batch-size",
        type=int,
        help="pairs (bce, contrastive with --pairs sampled) or images (triplet, --pairs batch)",
    )
    o.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    o.add_argument("--lr", type=float)
    o.add_argument("--momentum", type=float, help="SGD momentum")
    o.add_argument("--weight-decay", type=float)
    o.add_argument(
        "--schedule",
        help="none, cosine, step, exp:GAMMA (per epoch, over --epochs) or plateau (halve the "
        "learning rate after 2 epochs without better validation one-shot accuracy)",
    )
    o.add_argument(
        "--augment",
        choices=["none", "affine"],
        help="random affine distortions on the device (Koch et al.)",
    )
    o.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without better validation one-shot accuracy",
    )
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/default", help="run folder")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run from last.pt with its own arguments (only --epochs, "
        "--time-budget, --patience, --device, --workers and --quiet may be given anew)",
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    r.add_argument(
        "--workers",
        type=int,
        default=0,
        help="CPU threads for computation (0: PyTorch's default); batches are drawn "
        "on tensors in the training process, so no loader workers are needed",
    )
    r.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="auto",
        help="mixed precision of the training step (auto: bf16 on CUDA, and on CPUs with AMX "
        "tiles, where it is faster; off elsewhere)",
    )
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument(
        "--memory-format",
        choices=["auto", "channels-last", "contiguous"],
        default="auto",
        help="layout of convolution activations (auto: channels-last on CPU and CUDA)",
    )
    r.add_argument("--json", action="store_true", help="print the final summary as JSON")
    add_quiet(r)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from siamnet.train import TrainConfig, fit

    fields = set(TrainConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    summary = fit(TrainConfig(**values))
    if not summary:  # not rank 0
        return 0
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    lines = [
        f"run: {s['run']} (best epoch {s['best_epoch']} of {s['epochs_run']}, stopped by "
        f"{s.get('stopped_by', 'epochs')}, {s['train_seconds']:.0f}s training, "
        f"{s['images_seen']} images seen)"
    ]
    if "test_pair_acc" in s:
        lines.append(
            f"test pair accuracy (test split, classes {s['test_classes']}): "
            f"{s['test_pair_acc']:.4f}"
            f"  ROC AUC {s['test_auc']:.4f}"
        )
    if "oneshot" in s:
        o = s["oneshot"]
        unseen = s["unseen_classes"]
        lines.append(
            f"{o['ways']}-way one-shot accuracy on unseen classes "
            f"({', '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}"
            f"): {o['accuracy']:.4f} ± {o['ci95']:.4f} (95% CI, {o['episodes']} episodes; "
            f"chance {1 / o['ways']:.3f})"
        )
        lines.append(f"pair accuracy on unseen classes: {s['unseen_pair_acc']:.4f}")
    lines.append(f"threshold: {s['threshold']:.4f} (calibrated on validation pairs)")
    return "\n".join(lines)
