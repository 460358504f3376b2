"""Argument helpers shared by several verbs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from siamnet.errors import ArgumentError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the example in a verb's description as written and shows defaults that exist."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_verb(subparsers: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A verb's parser whose ``--help`` ends with an example and whose errors are one line."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=f"{help}\n\nexample:\n  {example}",
        formatter_class=HelpFormatter,
    )
    one_line_errors(parser)
    return parser


#: What a CKPT argument may name, for every verb that loads a model.
CHECKPOINT_HELP = (
    "a checkpoint file, a run folder, or a shared model folder (export --format safetensors)"
)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_duration(text: str) -> float:
    """``"600"``, ``"90s"``, ``"10m"`` or ``"1.5h"`` to seconds (``0`` means no limit)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    body, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1.0)
    try:
        seconds = float(body) * unit
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ArgumentError(f"--time-budget {text!r}: expected seconds such as 600, 90s, 10m or 1h")
    return seconds


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"28"`` or ``"28x28"`` (``HxW``) to ``(H, W)``."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ArgumentError(f"--image-size {text!r}: expected HxW such as 28x28, or one number")
    return sizes[0], sizes[1]


def parse_name_list(text: str | None) -> list[str] | None:
    """``"6,7,8,9"`` to ``["6", "7", "8", "9"]``."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ArgumentError("--eval-classes: expected a comma-separated list of class names")
    return names


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


#: Ends a help text that states its own default: formats as nothing, and its presence stops the
#: help formatter from appending "(default: None)".
NO_DEFAULT = "%(default).0s"


def one_line_errors(p: argparse.ArgumentParser) -> None:
    """Make argparse's own errors for `p` one line, ``siamnet: error: ...``, exit status 2."""

    def error(message: str) -> None:
        print(f"siamnet: error: {p.prog}: {message} (see '{p.prog} --help')", file=sys.stderr)
        sys.exit(2)

    p.error = error  # type: ignore[method-assign]


def query_files(entries: list[str]) -> list[Path]:
    """The files named by ``--query`` entries: files as they are, folders listed recursively."""
    from siamnet.errors import DataError
    from siamnet.images import list_image_files

    files: list[Path] = []
    for entry in entries:
        p = Path(entry)
        if p.is_dir():
            found = list_image_files(p, recursive=True)
            if not found:
                raise DataError(f"{p}: no image files in this query folder")
            files += found
        else:
            files.append(p)
    return files


def report_skipped(failures: list[tuple[object, str]]) -> None:
    """Name each unreadable file on stderr, one line each."""
    for _, message in failures:
        print(f"siamnet: skipped: {message}", file=sys.stderr)


def add_image_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--invert``, shared by the verbs that read image files."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert images (255 - value) after reading; use for dark-on-light images when the "
        "model was trained on light-on-dark ones such as MNIST and the built-in digits",
    )
