"""One writer at a time per gallery: an exclusive `fcntl.flock` on a lock file beside it.

The lock file is ``.NAME.siamnet-lock`` in the gallery's parent folder (not inside the gallery:
the gallery folder itself is swapped for a new one on every write). A writer waits for the lock
at most `wait_s` seconds, then is refused in one line. The holder removes the file when it is
done; a writer that finds, once it holds the lock, that the file it locked is no longer the one
at that path (removed by the previous holder) starts again, so two writers never hold locks on
two different files. A killed holder's lock is released by the system; its file is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from siamnet.errors import SiamnetError
from siamnet.fileio import reported_as
from siamnet.presets import GALLERY_LOCK_WAIT_S

#: Seconds a writer waits for another writer of the same gallery before it is refused.
LOCK_WAIT_S = GALLERY_LOCK_WAIT_S

_POLL_S = 0.05


def lock_path(gallery: str | os.PathLike[str]) -> Path:
    """The lock file of gallery folder `gallery`: ``.NAME.siamnet-lock`` beside it (beside
    the folder a link points to, which is the one replaced)."""
    d = Path(gallery).resolve()
    return d.parent / f".{d.name}.siamnet-lock"


@contextlib.contextmanager
def gallery_lock(gallery: str | os.PathLike[str], wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the write lock of `gallery` (waiting at most `wait_s` seconds for another writer)."""
    path = lock_path(gallery)
    with reported_as(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    fd = _acquire(
        path,
        deadline,
        f"{gallery}: another siamnet process is writing this gallery "
        f"(lock {path.name}); waited {wait_s:g} s: try again when it is done",
    )
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # releases the lock


def _acquire(path: Path, deadline: float, refusal: str) -> int:
    """An open descriptor of `path` holding its exclusive lock, the file still at `path`;
    `SiamnetError(refusal)` past `deadline`."""
    while True:
        with reported_as(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SiamnetError(refusal) from None
                    time.sleep(_POLL_S)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed it: lock the file now at `path`
