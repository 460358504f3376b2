"""Atomic writes of files and folders: a temporary name in the same folder, flushed to disk, then
a rename.

Temporaries are named by `siamnet.temps` (``.NAME.siamnet-PID-XXXXXXXX.tmp`` for a file,
``.NAME.siamnet-PID-XXXXXXXX.new`` for a folder), which also finds and removes those that killed
processes left. Final files get the mode ``0o666 & ~umask`` (folders ``0o777 & ~umask``), like
files written by any other tool.

A write that fails for lack of space (``ENOSPC``, ``EDQUOT``, or ``EFBIG`` past a file size
limit) raises `SiamnetError` with one line, ``no space left writing FILE (...)``; the temporary
file is removed and the previous file, if any, is left as it was. Tensors are serialised into
memory first (`save_torch`) so that the operating system's error reaches us rather than
torch's ``PytorchStreamWriter failed writing file``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import io
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from siamnet.errors import SiamnetError
from siamnet.temps import is_temp_name, remove_path, temp_prefix

_NO_SPACE = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit was reached",
}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


# --- modes -----------------------------------------------------------------------------------

_umask_lock = threading.Lock()


@functools.cache
def _umask_by_setting() -> int:
    """The umask, read by setting it and putting it back (once per process: not thread-safe)."""
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def current_umask() -> int:
    """The process's umask, from ``/proc/self/status`` where present (read without changing
    it), else by setting and restoring it once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_by_setting()


def file_mode() -> int:
    """The mode of a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode of a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


# --- errors ----------------------------------------------------------------------------------


def write_error(target: str | os.PathLike[str], exc: OSError) -> SiamnetError | None:
    """The one-line error for an `OSError` while writing `target`, or None if it is a bug."""
    if exc.errno in _NO_SPACE:
        return SiamnetError(
            f"no space left writing {target} ({_NO_SPACE[exc.errno]}); nothing was replaced: "
            "free some space and run again"
        )
    if exc.errno in _NOT_ALLOWED:
        return SiamnetError(f"cannot write {target}: {exc.strerror or 'not allowed'}")
    return None


@contextlib.contextmanager
def reported_as(target: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a lack of space or permission while writing into a one-line error naming `target`."""
    try:
        yield
    except OSError as exc:
        error = write_error(target, exc)
        if error is None:
            raise
        raise error from exc


# --- files -----------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On any exception the temporary file is removed and `path` is left as it was; a lack of
    space (or permission) is reported as one line naming `path`.
    """
    target = Path(path)
    with reported_as(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent
        )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with reported_as(target):
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, target)
    finally:
        remove_path(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fh)`` on a temporary binary file, then rename it onto `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def torch_bytes(obj: Any) -> memoryview:
    """`obj` as `torch.save` writes it, in memory."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """`torch.save` `obj` to `path` atomically, serialised in memory first so that a full disk
    is reported as such."""
    atomic_write_bytes(path, torch_bytes(obj))


def write_file(
    path: str | os.PathLike[str],
    data: bytes | memoryview,
    shown_as: str | os.PathLike[str] | None = None,
) -> None:
    """Write `data` to a new file `path` (in a folder still being built, see `atomic_folder`),
    flushed to disk, with the umask's mode; errors name `shown_as` (default `path`)."""
    p = Path(path)
    with reported_as(shown_as or p):
        with open(p, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(p, file_mode())


def atomic_write_files(
    files: Sequence[tuple[str | os.PathLike[str], bytes | memoryview]],
    remove_first: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Write several files that belong together, e.g. a model and its description.

    Every file is first written to a temporary name and flushed, so that a lack of space
    leaves all the old files as they were; then each path of `remove_first` is removed (the
    file that says the others are complete, so that it never describes a mixed set) and the
    files are renamed into place in the order given (that file last).
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            target = Path(path)
            with reported_as(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(
                    prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent
                )
            os.close(fd)
            temps.append((Path(name), target))
            write_file(name, data, shown_as=target)
        for path in remove_first:
            with reported_as(path), contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for tmp, target in temps:
            with reported_as(target):
                os.replace(tmp, target)
        if temps:
            _fsync_folder(temps[-1][1].parent)
    finally:
        for tmp, _ in temps:
            remove_path(tmp)


# --- folders ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike[str], keep_others: bool = False, drop: Collection[str] = ()
) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; on success it replaces `path` as a whole.

    Where the system can (Linux ``renameat2``), the two folders are exchanged in one step, so
    `path` always holds the whole old or the whole new folder. Elsewhere the old folder is
    renamed to ``.NAME.siamnet-PID-XXXXXXXX.old`` and the new one into place; a process killed
    between the two renames leaves `path` missing and the old folder beside it, which
    `siamnet.temps.restore_interrupted_swap` puts back. With `keep_others`, entries of the old
    folder that the new one lacks (other than temporaries and the names in `drop`) are carried
    over.
    """
    target = Path(path)
    if target.name in ("", ".", "..") or target.is_symlink():
        target = target.resolve()  # replace the folder itself, not a link to it
    if target.exists() and not target.is_dir():
        raise SiamnetError(f"{target}: exists and is a file; expected a folder")
    with reported_as(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(prefix=temp_prefix(target.name), suffix=".new", dir=target.parent)
        )
    try:
        yield tmp
        with reported_as(target):
            if keep_others and target.is_dir():
                _carry_over(target, tmp, drop)
            os.chmod(tmp, folder_mode())
            _fsync_folder(tmp)
            _swap_in(tmp, target)
            _fsync_folder(target.parent)
    finally:
        remove_path(tmp)


def _carry_over(old: Path, new: Path, drop: Collection[str] = ()) -> None:
    """Link (or copy) into `new` each entry of `old` that `new` lacks, other than temporaries
    and the names in `drop`."""
    for entry in old.iterdir():
        dst = new / entry.name
        if os.path.lexists(dst) or is_temp_name(entry.name) or entry.name in drop:
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dst)
        elif entry.is_dir():
            shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap_in(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; the folder that was there is removed."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if _exchange(new, target):
        remove_path(new)  # now the old folder
        return
    old = new.with_name(new.name[: -len(".new")] + ".old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    remove_path(old)


@functools.cache
def _renameat2() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Exchange two paths in one step (Linux ``RENAME_EXCHANGE``); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_folder(path: Path) -> None:
    """Flush a folder's entries to disk where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
