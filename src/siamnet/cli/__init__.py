"""The `siamnet` command line: argument parsing only, every verb calls the library.

Each verb lives in its own module with ``register(subparsers)``, which adds its parser and sets
``func`` to a function ``(args) -> int``. Errors of the `SiamnetError` family are printed as one
line, ``siamnet: error: <message>``, with exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from siamnet import __version__
from siamnet.cli.common import one_line_errors
from siamnet.errors import SiamnetError
from siamnet.progress import set_quiet
from siamnet.threads import choose_wait_policy

#: Verb modules, in the order `siamnet --help` lists them.
VERB_MODULES = [
    "siamnet.cli.data_cmd",
    "siamnet.cli.train_cmd",
    "siamnet.cli.evaluate_cmd",
    "siamnet.cli.plot_cmd",
    "siamnet.cli.compare_cmd",
    "siamnet.cli.classify_cmd",
    "siamnet.cli.index_cmd",
    "siamnet.cli.export_cmd",
    "siamnet.cli.serve_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamnet",
        description="Siamese networks and one-shot image recognition in PyTorch.",
        epilog="Run 'siamnet VERB --help' for the options and an example of each verb.",
    )
    parser.add_argument("--version", action="version", version=f"siamnet {__version__}")
    one_line_errors(parser)
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERB_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    choose_wait_policy()  # before any verb imports torch
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SiamnetError as exc:  # raised by an argument's type= parser
        print(f"siamnet: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    set_quiet(bool(getattr(args, "quiet", False)))
    try:
        return int(args.func(args) or 0)
    except SiamnetError as exc:
        message = " ".join(str(exc).split())
        print(f"siamnet: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("siamnet: interrupted", file=sys.stderr)
        return 130
