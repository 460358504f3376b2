"""`siamnet evaluate` (verification and N-way K-shot accuracy) and `siamnet calibrate` (choose
and store the decision threshold)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from siamnet.cli.common import (
    CHECKPOINT_HELP,
    NO_DEFAULT,
    add_quiet,
    add_verb,
    one_line_errors,
    parse_name_list,
)
from siamnet.errors import ArgumentError
from siamnet.presets import EVAL_EPISODES, EVAL_PAIRS, EVAL_SEED


def register(subparsers: argparse._SubParsersAction) -> None:
    register_evaluate(subparsers)
    register_calibrate(subparsers)


def register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "evaluate",
        "Measure a trained model: pair verification and N-way K-shot accuracy on unseen classes.",
        "siamnet evaluate runs/digits --data digits\n"
        "  siamnet evaluate runs/digits --eval-classes 6,7,8,9 --json report.json\n"
        "  siamnet evaluate runs/omniglot/best.pt --data omniglot --ways 5 20 --shots 1 "
        "--figures figs/",
    )
    add_checkpoint_and_data(p)
    p.add_argument("--pairs", type=int, default=EVAL_PAIRS, help="fixed verification pairs")
    p.add_argument(
        "--ways",
        nargs="+",
        default=["5", "10", "20"],
        metavar="N",
        help="N of N-way episodes, capped at the evaluation classes (default: 5 10 "
        f"20){NO_DEFAULT}",
    )
    p.add_argument(
        "--shots",
        nargs="+",
        default=["1", "5"],
        metavar="K",
        help=f"K support images per class (default: 1 5){NO_DEFAULT}",
    )
    p.add_argument("--queries", type=int, default=1, help="query images per class and episode")
    p.add_argument("--episodes", type=int, default=EVAL_EPISODES, help="episodes per N and K")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the pairs and episodes")
    p.add_argument(
        "--centring",
        choices=("on", "off"),
        help="measure with or without test-time centring on the mean training embedding "
        f"(default: as the checkpoint applies it){NO_DEFAULT}",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        help=f"also write the report as JSON to FILE ('-': print only JSON to stdout){NO_DEFAULT}",
    )
    p.add_argument(
        "--figures",
        metavar="DIR",
        help="write pairs, predictions, roc, embeddings "
        f"and episodes figures (PNG) into DIR{NO_DEFAULT}",
    )
    add_quiet(p)
    p.epilog = (
        "Evaluation classes: --eval-classes if given, else the data's classes the checkpoint\n"
        "was not trained on, else (every class seen) the data's test split. Verification\n"
        "reports accuracy, precision, recall, false-accept (FAR) and false-reject (FRR) rates\n"
        "at the head's fixed default threshold and at the checkpoint's calibrated one. Within-\n"
        "group episodes (all N classes from one alphabet) are reported when classes have groups."
    )
    p.set_defaults(func=run_evaluate)


def register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "calibrate",
        "Choose the decision threshold on validation pairs and store it in the checkpoint.",
        "siamnet calibrate runs/digits --target-far 0.01\n"
        "  siamnet calibrate runs/digits/best.pt --data digits --best-accuracy",
    )
    add_checkpoint_and_data(p, eval_classes=False)
    p.add_argument(
        "--target-far",
        type=float,
        metavar="RATE",
        help="the lowest threshold whose false-accept rate is at most RATE "
        f"(default: 0.01 unless --best-accuracy){NO_DEFAULT}",
    )
    p.add_argument(
        "--best-accuracy",
        action="store_true",
        help="the threshold of the highest accuracy (instead of --target-far)",
    )
    p.add_argument("--pairs", type=int, default=10000, help="calibration pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration pairs")
    p.add_argument(
        "--json",
        metavar="FILE",
        help=f"also write the result as JSON to FILE ('-': print only JSON to stdout){NO_DEFAULT}",
    )
    add_quiet(p)
    p.epilog = (
        "Calibration pairs come from the examples training held out for validation, rebuilt\n"
        "from the checkpoint's training arguments when --data is the data it was trained on;\n"
        "otherwise from the first split of --data. The checkpoint file is rewritten atomically;\n"
        "compare and classify then use the new threshold."
    )
    p.set_defaults(func=run_calibrate)


def add_checkpoint_and_data(p: argparse.ArgumentParser, eval_classes: bool = True) -> None:
    """CKPT, ``--data``, ``--device`` (and ``--eval-classes``), shared with ``siamnet plot``."""
    one_line_errors(p)
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument(
        "--data",
        metavar="SPEC",
        help=f"data set name or path (default: the data the checkpoint was trained on){NO_DEFAULT}",
    )
    if eval_classes:
        p.add_argument(
            "--eval-classes",
            metavar="NAMES",
            help="comma-separated classes to evaluate on (default: the classes not "
            f"seen in training){NO_DEFAULT}",
        )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def load_inputs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The checkpoint and the data set the arguments name."""
    from siamnet.checkpoint import load_checkpoint
    from siamnet.device import resolve_device
    from siamnet.evaluate import dataset_for

    ckpt = load_checkpoint(args.checkpoint, resolve_device(args.device))
    return ckpt, dataset_for(ckpt, args.data)


def parse_ints(name: str, values: list[str], least: int) -> list[int]:
    """``["5,10", "20"]`` -> ``[5, 10, 20]``; each at least `least`."""
    out = []
    for text in ",".join(values).split(","):
        if not text.strip():
            continue
        try:
            value = int(text)
        except ValueError:
            raise ArgumentError(f"{name} {text!r}: expected whole numbers") from None
        if value < least:
            raise ArgumentError(f"{name} {value}: must be at least {least}")
        out.append(value)
    if not out:
        raise ArgumentError(f"{name}: give at least one number")
    return out


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ArgumentError(f"--{name} must be at least 1, got {value}")


def write_json(target: str, obj: dict[str, Any]) -> None:
    """`obj` as JSON to stdout (``-``) or atomically to a file."""
    from siamnet.evaluate import json_ready
    from siamnet.fileio import atomic_write_text

    text = json.dumps(json_ready(obj), indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(target, text)


def run_evaluate(args: argparse.Namespace) -> int:
    from siamnet.allocator import keep_freed_memory
    from siamnet.cli.report_text import format_evaluation
    from siamnet.evaluate import evaluate_checkpoint
    from siamnet.models.siamese import centring_as

    ways = parse_ints("--ways", args.ways, 2)
    shots = parse_ints("--shots", args.shots, 1)
    check_positive(pairs=args.pairs, queries=args.queries, episodes=args.episodes)
    eval_classes = parse_name_list(args.eval_classes)
    ckpt, dataset = load_inputs(args)
    keep_freed_memory()
    with centring_as(ckpt.model, args.centring):  # the figures see the same embeddings
        evaluation = evaluate_checkpoint(
            ckpt,
            dataset,
            eval_classes=eval_classes,
            pairs=args.pairs,
            ways=ways,
            shots=shots,
            queries=args.queries,
            episodes=args.episodes,
            seed=args.seed,
        )
        report = evaluation.report
        if args.figures:
            from siamnet.plots.figures import evaluation_figures

            paths = evaluation_figures(ckpt, dataset, evaluation, args.figures, seed=args.seed)
            report["figures"] = [str(p) for p in paths]
    if args.json:
        write_json(args.json, report)
    if args.json != "-":
        print(format_evaluation(report))
        if args.figures:
            print(f"\nfigures: {', '.join(report['figures'])}")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from siamnet.cli.report_text import format_calibration
    from siamnet.evaluate import calibrate_checkpoint

    check_positive(pairs=args.pairs)
    target_far = args.target_far
    if target_far is not None and args.best_accuracy:
        raise ArgumentError("give --target-far RATE or --best-accuracy, not both")
    if target_far is None and not args.best_accuracy:
        target_far = 0.01
    ckpt, dataset = load_inputs(args)
    result = calibrate_checkpoint(
        ckpt,
        dataset,
        target_far=target_far,
        best_accuracy=args.best_accuracy,
        pairs=args.pairs,
        seed=args.seed,
    )
    if args.json:
        write_json(args.json, result)
    if args.json != "-":
        print(format_calibration(result))
    return 0
