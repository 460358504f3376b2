"""`siamnet plot`: one figure of a trained model (or a run's training curves) as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from siamnet.cli.common import NO_DEFAULT, add_quiet, add_verb, one_line_errors, parse_name_list
from siamnet.errors import ArgumentError
from siamnet.outpaths import check_output_file

KINDS = ("pairs", "predictions", "roc", "embeddings", "episodes", "curves")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "plot",
        "Draw one figure: pairs, predictions, roc, embeddings, episodes or training curves.",
        "siamnet plot predictions runs/digits --out predictions.png\n"
        "  siamnet plot roc runs/digits/best.pt --data digits --out roc.png\n"
        "  siamnet plot pairs --data digits --out pairs.png\n"
        "  siamnet plot curves runs/digits --out curves.png",
    )
    one_line_errors(p)
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.add_argument(
        "source",
        nargs="?",
        metavar="CKPT_OR_RUN",
        help="a checkpoint file or run folder (optional for pairs; a run folder "
        f"for curves){NO_DEFAULT}",
    )
    p.add_argument(
        "--data",
        metavar="SPEC",
        help=f"data set name or path (default: the data the checkpoint was trained on){NO_DEFAULT}",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.png",
        help=f"where to write the PNG (required){NO_DEFAULT}",
    )
    p.add_argument(
        "--eval-classes",
        metavar="NAMES",
        help="comma-separated classes to draw from (default: classes not seen in "
        f"training, as evaluate chooses){NO_DEFAULT}",
    )
    p.add_argument("--count", type=int, default=10, help="pairs shown (pairs, predictions)")
    p.add_argument(
        "--threshold",
        type=float,
        help=f"'same' at or above this score (default: the checkpoint's){NO_DEFAULT}",
    )
    p.add_argument("--pairs", type=int, default=10000, help="pairs behind the ROC curve")
    p.add_argument("--ways", type=int, default=5, help="N of the episodes (at most 10)")
    p.add_argument("--episodes", type=int, default=4, help="episodes shown (at most 6)")
    p.add_argument("--points", type=int, default=2000, help="at most this many embeddings")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "tsne", "umap"),
        help="2-D map of embeddings (auto: UMAP when installed, else t-SNE)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs, episodes and points")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_quiet(p)
    p.epilog = (
        "pairs, predictions, roc and episodes draw from the evaluation data that 'siamnet\n"
        "evaluate' uses (classes not seen in training); embeddings maps every split of the\n"
        "data, training classes as circles and unseen classes as crosses. 'plot pairs'\n"
        "without a checkpoint draws pairs from the first split of --data."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ArgumentError(f"--out {args.out}: figures are PNG files; name it *.png")
    check_output_file(out, "--out")
    from siamnet.infer import finite_number

    threshold = finite_number(args.threshold, "--threshold")
    if args.kind == "curves":
        return _curves(args, out)
    if args.kind == "pairs" and args.source is None:
        return _data_pairs(args, out)
    if args.source is None:
        raise ArgumentError(f"plot {args.kind}: give a checkpoint file or run folder (CKPT_OR_RUN)")
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.evaluate import dataset_for, evaluation_data
    from siamnet.plots import figures

    ckpt = load_checkpoint(args.source, resolve_device(args.device))
    dataset = dataset_for(ckpt, args.data)
    if args.kind == "embeddings":
        figures.embeddings_figure(ckpt, dataset, out, args.points, args.method, args.seed)
    else:
        data = evaluation_data(dataset, ckpt.metadata, parse_name_list(args.eval_classes)).data
        if args.kind == "pairs":
            figures.pairs_figure(data, out, args.count, args.seed)
        elif args.kind == "predictions":
            figures.predictions_figure(ckpt, data, out, args.count, args.seed, threshold)
        elif args.kind == "roc":
            figures.roc_figure(ckpt, data, out, args.pairs, args.seed)
        else:
            figures.episodes_figure(ckpt, data, out, args.ways, args.episodes, args.seed)
    print(out)
    return 0


def _curves(args: argparse.Namespace, out: Path) -> int:
    from siamnet.plots.curves import plot_training_curves

    if args.source is None:
        raise ArgumentError("plot curves: give a run folder (or its metrics.csv)")
    source = Path(args.source)
    metrics = (
        source
        if source.suffix == ".csv"
        else (source / "metrics.csv" if source.is_dir() else source.parent / "metrics.csv")
    )
    if not metrics.is_file():
        raise ArgumentError(
            f"plot curves {args.source}: no metrics.csv there (a run folder "
            "written by 'siamnet train' has one)"
        )
    plot_training_curves(metrics, out, _run_loss(metrics.parent))
    print(out)
    return 0


def _data_pairs(args: argparse.Namespace, out: Path) -> int:
    from siamnet.data.registry import load_dataset
    from siamnet.plots.figures import pairs_figure

    if not args.data:
        raise ArgumentError("plot pairs: give --data SPEC or a checkpoint")
    dataset = load_dataset(args.data)
    pairs_figure(dataset.train, out, args.count, args.seed, title=f"pairs of {dataset.name}")
    print(out)
    return 0


def _run_loss(run_dir: Path) -> str | None:
    """The loss a run folder was trained with, from its ``summary.json``, if it has one."""
    import json

    try:
        loss = json.loads((run_dir / "summary.json").read_text()).get("loss")
    except (OSError, ValueError, AttributeError):
        return None
    return str(loss) if loss else None
