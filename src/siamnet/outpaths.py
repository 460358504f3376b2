"""Checks that an output path is usable, made before anything is written.

A command that writes a file or a folder calls `check_output_file` or `check_output_dir` on
each output path before it reads data, trains or embeds, so that a path that cannot be written
is one ``ArgumentError`` line naming the flag and the path, and nothing has been written. Each
refuses:

- a parent that is a file (``FILE/x.png``);
- a folder where a file is expected, or a file where a folder is expected;
- a parent that cannot be created or written (``/proc/x``, a read-only file system, no
  permission), found by creating and removing an empty file in the nearest existing folder
  (``os.access`` says yes to root even where nothing can be created);
- a symbolic link that points nowhere.

Folders that are missing are not created here; the writer creates them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from siamnet.errors import ArgumentError
from siamnet.temps import TEMP_MARK


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """`path` as a `Path` after checking that a file can be written there (see the module
    docstring); `ArgumentError` naming `flag` and `path` otherwise."""
    p = Path(path)
    _refuse_dangling(p, flag)
    if p.is_dir():
        raise ArgumentError(f"{flag} {path}: is a folder; expected a file name")
    _check_parent(p, flag, path)
    return p


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """`path` as a `Path` after checking that a folder can be written there (it is replaced
    as a whole, so the folder that holds it must be writable); `ArgumentError` otherwise."""
    p = Path(path)
    _refuse_dangling(p, flag)
    if p.exists() and not p.is_dir():
        raise ArgumentError(f"{flag} {path}: is a file; expected a folder")
    target = p.resolve() if p.is_symlink() or p.name in ("", ".", "..") else p
    _check_parent(target, flag, path)
    return p


def _refuse_dangling(p: Path, flag: str) -> None:
    if p.is_symlink() and not p.exists():
        raise ArgumentError(
            f"{flag} {p}: a symbolic link to {os.readlink(p)}, which does not exist"
        )


def _check_parent(p: Path, flag: str, shown: str | os.PathLike[str]) -> None:
    """The nearest existing folder above `p` must be a folder in which files can be made."""
    folder = p.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if folder.is_symlink() and not folder.exists():
        raise ArgumentError(
            f"{flag} {shown}: {folder} is a symbolic link to {os.readlink(folder)}, which "
            "does not exist"
        )
    if not folder.is_dir():
        raise ArgumentError(f"{flag} {shown}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(
            prefix=f".{p.name or 'out'}.{TEMP_MARK}-{os.getpid()}-", suffix=".tmp", dir=folder
        )
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ArgumentError(f"{flag} {shown}: cannot write in {folder} ({reason})") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
