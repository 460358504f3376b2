"""Progress bars on stderr, quiet when stderr is not a terminal or when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar of this process (``--quiet``)."""
    global _QUIET
    _QUIET = quiet


def progress_enabled() -> bool:
    return not _QUIET and sys.stderr.isatty()


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that disables itself when nobody can see it."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
