"""Temporaries: how siamnet names them, and finding and removing those that killed processes left.

Temporary names carry the writer's process id, ``.NAME.siamnet-PID-XXXXXXXX.tmp`` for a file
and ``.NAME.siamnet-PID-XXXXXXXX.new`` (``.old``) for a folder (`temp_prefix`), so that
`remove_stale_temps` can tell the leftovers of a killed process from the work of a running one.
The writes that use these names are in `siamnet.fileio`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from siamnet.errors import SiamnetError

#: The mark in every temporary name siamnet writes.
TEMP_MARK = "siamnet"
#: Temporaries older than this are stale even if their process id is in use again.
STALE_AGE_S = 86400.0

_MARKED = re.compile(
    rf"^\.(?P<name>.+)\.{TEMP_MARK}-(?P<pid>\d+)-(?P<token>[A-Za-z0-9_]{{8}})"
    r"\.(?P<kind>tmp|new|old)$"
)


def temp_prefix(name: str) -> str:
    """The start of a temporary name for a file or folder `name`, marked with this process
    (``tempfile.mkstemp`` and ``mkdtemp`` add the random part and the suffix)."""
    return f".{name}.{TEMP_MARK}-{os.getpid()}-"


def is_temp_name(name: str) -> bool:
    """Whether `name` is named like one of siamnet's temporaries."""
    return _MARKED.match(name) is not None


def remove_path(path: Path) -> None:
    """Remove a file, link or folder (a folder with everything in it); nothing if missing."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


@dataclass(frozen=True)
class TempEntry:
    """A temporary file or folder of siamnet's naming, and whether its writer may still run."""

    path: Path
    target: Path
    kind: str  # "tmp", "new" or "old"
    pid: int
    age_s: float

    @property
    def writer_running(self) -> bool:
        return self.age_s < STALE_AGE_S and pid_running(self.pid)


def pid_running(pid: int) -> bool:
    """Whether a process `pid` exists (on this machine)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process there; the age rule decides
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def temp_entries(folder: str | os.PathLike[str]) -> list[TempEntry]:
    """The temporaries of siamnet's naming directly in `folder`."""
    d = Path(folder)
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    out = []
    for name in names:
        match = _MARKED.match(name)
        if match is None:
            continue
        path = d / name
        try:
            age = now - path.lstat().st_mtime
        except FileNotFoundError:
            continue
        kind, pid = match.group("kind"), int(match.group("pid"))
        out.append(TempEntry(path, d / match.group("name"), kind, pid, age))
    return out


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries in `folder` left by processes that are no longer running.

    A temporary (``.NAME.siamnet-PID-…``) goes when process PID is gone, or after a day. A
    ``.old`` folder whose NAME is missing is the previous version of an interrupted
    replacement: it is renamed back, not removed. Returns the paths removed.
    """
    removed = []
    for entry in temp_entries(folder):
        if entry.writer_running:
            continue
        if (entry.kind == "tmp") == (entry.path.is_dir() and not entry.path.is_symlink()):
            continue  # not one of ours: temporary files are files, .new and .old are folders
        if entry.kind == "old" and not os.path.lexists(entry.target):
            with contextlib.suppress(OSError, SiamnetError):
                restore_interrupted_swap(entry.target)
            if not os.path.lexists(entry.path):
                continue
        with contextlib.suppress(OSError):
            remove_path(entry.path)
            removed.append(entry.path)
    return removed


def restore_interrupted_swap(path: str | os.PathLike[str]) -> Path | None:
    """Put back the previous version of folder `path` if a replacement was interrupted.

    Where `path` is missing and a ``.old`` folder of it was left by a process no longer
    running (`siamnet.fileio.atomic_folder`, killed between its two renames), that folder is
    renamed back to `path` and its old name returned; None when there is nothing to restore.
    Raises `SiamnetError` while another process is replacing `path`, or when the folder cannot
    be renamed back (the message says where it is).
    """
    target = Path(path)
    if os.path.lexists(target):
        return None
    olds = [
        e
        for e in temp_entries(target.parent)
        if e.kind == "old" and e.target.name == target.name and e.path.is_dir()
    ]
    if not olds:
        return None
    old = min(olds, key=lambda e: e.age_s)
    if old.writer_running:
        raise SiamnetError(
            f"{target}: being replaced by process {old.pid} right now (the previous version is "
            f"in {old.path.name}); try again when it has finished"
        )
    try:
        os.rename(old.path, target)
    except OSError as exc:
        raise SiamnetError(
            f"{target}: missing; an interrupted replacement left the previous version in "
            f"{old.path}: rename it back to {target} ({exc.strerror})"
        ) from exc
    return old.path
