"""`siamnet classify`: the class of each query image among the classes of a support folder."""

from __future__ import annotations

import argparse

from siamnet.cli.common import (
    CHECKPOINT_HELP,
    add_image_options,
    add_quiet,
    add_verb,
    print_json,
    query_files,
    report_skipped,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "classify",
        "Classify query images against a support folder (one sub-folder per class, K-shot).",
        "siamnet classify runs/digits --support support/ --query queries/\n"
        "  siamnet classify runs/digits --support support/ --query q1.png --query q2.png --json\n"
        "  siamnet classify runs/faces --support people/ --query door.jpg --reject-below 0.9",
    )
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument(
        "--support",
        required=True,
        metavar="DIR",
        help="folder with one sub-folder per class, each holding one or more images",
    )
    p.add_argument(
        "--query",
        required=True,
        action="append",
        metavar="FILE|DIR",
        help="an image file, or a folder of them (read recursively); may be repeated",
    )
    p.add_argument(
        "--reject-below",
        type=float,
        metavar="T",
        help="answer 'unknown' when the best class scores below T (open-set use)",
    )
    p.add_argument(
        "--scoring",
        choices=["mean", "prototype"],
        default="mean",
        help="mean: mean similarity to a class's support images; prototype: similarity to "
        "their mean embedding (for embedding heads)",
    )
    add_image_options(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images embedded at a time (default: by image size on a CPU, 512 on a GPU)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_quiet(p)
    p.epilog = (
        "Unreadable images (support or query) are named on stderr and skipped; the exit\n"
        "status is then 1. Output: one line per query, tab-separated: file, class (or\n"
        "'unknown'), score, runner-up and its score."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.images import read_images, read_support_folder
    from siamnet.infer import build_support, classify, finite_number

    reject_below = finite_number(args.reject_below, "--reject-below")
    ckpt = load_checkpoint(args.checkpoint, resolve_device(args.device))
    channels, size, resize = ckpt.spec.in_channels, ckpt.spec.image_size, ckpt.spec.resize
    images, labels, classes, paths, support_failures = read_support_folder(
        args.support, channels, size, invert=args.invert, resize=resize
    )
    report_skipped(support_failures)
    support = build_support(ckpt, images, labels, classes, paths, batch_size=args.batch_size)
    files = query_files(args.query)
    queries, ok, query_failures = read_images(
        files, channels, size, args.invert, "reading queries", resize=resize
    )
    report_skipped(query_failures)
    predictions = (
        classify(ckpt, support, queries, reject_below, args.scoring, args.batch_size)
        if len(ok)
        else []
    )
    skipped = support_failures + query_failures
    if args.json:
        print_json(
            {
                "support": {"folder": args.support, "classes": classes, "images": len(paths)},
                "scoring": args.scoring,
                "reject_below": args.reject_below,
                "predictions": [
                    {"file": str(f), **p.to_dict()} for f, p in zip(ok, predictions, strict=True)
                ],
                "skipped": [{"file": str(f), "error": m} for f, m in skipped],
            }
        )
    else:
        for f, p in zip(ok, predictions, strict=True):
            answer = "unknown" if p.unknown else p.label
            line = f"{f}\t{answer}\t{p.score:.4f}"
            if p.unknown:
                line += f"\t(best {p.best})"
            if p.runner_up is not None:
                line += f"\trunner-up {p.runner_up} {p.runner_up_score:.4f}"
            print(line)
    return 1 if skipped else 0
