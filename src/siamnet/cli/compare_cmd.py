"""`siamnet compare`: the similarity of two images under a trained model."""

from __future__ import annotations

import argparse

from siamnet.cli.common import CHECKPOINT_HELP, add_image_options, add_verb, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "compare",
        "Score two images with a trained model and say whether they show the same class.",
        "siamnet compare runs/digits a.png b.png\n"
        "  siamnet compare runs/digits a.png b.png --json   # score, distance and the threshold\n"
        "  siamnet compare runs/digits pen1.png pen2.png --invert   # black-on-white drawings",
    )
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument(
        "a", metavar="IMAGE_A", help="an image file: PNG, JPEG, BMP, GIF, TIFF, WebP or PPM/PGM/PBM"
    )
    p.add_argument("b", metavar="IMAGE_B", help="another image file")
    p.add_argument(
        "--threshold",
        type=float,
        help="'same' when the score is at least this, on the score's scale (below): for the "
        "default euclidean head minus a distance, so 0 or below (default: the checkpoint's "
        "calibrated one)",
    )
    add_image_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.epilog = (
        "The score is higher for more alike images; its scale is the head's: the probability\n"
        "of 'same', 0..1, for the l1 head (bce training); minus the embedding distance, 0 or\n"
        "below, for euclidean heads (contrastive, triplet, proto; the default); the cosine,\n"
        "-1..1, for cosine heads. A --threshold must be on that scale: the --json output and\n"
        "'siamnet evaluate' show the checkpoint's own. A model trained on fewer than 20\n"
        "classes has its threshold tuned on classes seen in training, which may call many\n"
        "different images of new classes 'same' (the training summary and 'siamnet evaluate'\n"
        "give its false-accept rate on unseen classes): calibrate it on images of the new\n"
        "classes first ('siamnet calibrate RUN --data NEW --target-far 0.01'). An unreadable\n"
        "image is refused (exit status 2)."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.images import read_image
    from siamnet.infer import compare, finite_number

    threshold = finite_number(args.threshold, "--threshold")
    ckpt = load_checkpoint(args.checkpoint, resolve_device(args.device))
    spec = ckpt.spec
    shape = (spec.in_channels, spec.image_size)
    a = read_image(args.a, *shape, invert=args.invert, resize=spec.resize)
    b = read_image(args.b, *shape, invert=args.invert, resize=spec.resize)
    result = compare(ckpt, a, b, threshold=threshold)
    if args.json:
        print_json({"a": args.a, "b": args.b, "head": spec.head, **result.to_dict()})
        return 0
    verdict = "same" if result.same else "different"
    distance = "" if result.distance is None else f", distance {result.distance:.4f}"
    print(f"{verdict}: score {result.score:.4f} (threshold {result.threshold:.4f}{distance})")
    return 0
