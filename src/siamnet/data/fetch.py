"""Named data sets on disk: found locally, in the cache, or downloaded once and verified.

`dataset_dir(name)` returns a folder holding the data set's files, looking in this order:

1. usual local places (Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST
   IDX files in ``/usr/share/datasets/fashion-mnist``);
2. the cache, ``$SIAMNET_DATA/<name>`` or else ``$XDG_CACHE_HOME/siamnet/<name>`` (by default
   ``~/.cache/siamnet/<name>``);
3. a download into the cache from the data set's base URL, which the environment variable
   ``SIAMNET_URL_<NAME>`` (``SIAMNET_URL_MNIST``, ``SIAMNET_URL_FASHION_MNIST``,
   ``SIAMNET_URL_OMNIGLOT``) replaces, e.g. with a local mirror.

Every download goes to a temporary file in the cache folder, is checked against the checksum in
`CHECKSUMS` and only then renamed into place; zip archives (Omniglot) are extracted to a
temporary folder and renamed into place too, so the cache never holds a partial file.

Files already in the cache are verified against `CHECKSUMS` every time they are used, not
trusted: hashing costs about a tenth of a second for the largest set (Fashion-MNIST, 30 MB),
and a record of size and modification time, which would save that, would also miss damage
that leaves both unchanged. A damaged file is replaced by a fresh download when the server can
be reached, and otherwise reported (`DataError` naming the file); it is never used. Two kinds
of file cannot be verified and are trusted: a system package's folder in `LOCAL_DIRS` (managed
by the package manager; Debian's gzip files are recompressed, so their bytes differ from the
published ones) and the decompressed twin of a ``.gz`` (``train-images-idx3-ubyte``) put in the
cache by hand, which the IDX reader still checks for shape and length. An extracted archive
(Omniglot's folders) was verified as a zip before extraction and appears in one rename.

Temporary names carry the process id (``.NAME.siamnet-PID-XXXXXXXX.tmp`` for a download,
``.NAME.siamnet-PID-XXXXXXXX.new`` for an extraction folder, see `siamnet.temps`), so each run
first removes what a killed run left, while the temporaries of a download still running in
another process are kept.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from siamnet.errors import DataError
from siamnet.progress import progress
from siamnet.temps import remove_stale_temps, temp_prefix

#: Seconds to wait for a server to answer (or to send more bytes).
TIMEOUT_S = 30.0

#: Default base URLs; ``SIAMNET_URL_<NAME>`` replaces them.
BASE_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "omniglot": "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/",
}

#: The files of each data set with their checksums, ``"<algorithm>:<hex digest>"``. MNIST and
#: Fashion-MNIST are the published SHA-256 sums of the original gzip files; the Omniglot zips
#: are known by the MD5 sums torchvision checks.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "sha256:a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "sha256:346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "sha256:67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "omniglot": {
        "images_background.zip": "md5:68d2efa1b9178cc56df9314c21c6e718",
        "images_evaluation.zip": "md5:6b91aef0f799c5bb55b94e3f2daec811",
    },
}

#: Folders where a system package may already have put a data set's files (never written to).
LOCAL_DIRS: dict[str, list[Path]] = {
    "mnist": [],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "omniglot": [],
}

_CHUNK = 1 << 20


def dataset_dir(name: str) -> Path:
    """A folder holding data set `name`'s files, downloading them into the cache if needed.

    IDX files (``train-images-idx3-ubyte.gz``, ...) for ``mnist`` and ``fashion-mnist``;
    ``images_background/`` and ``images_evaluation/`` for ``omniglot``. Files in the cache are
    verified (and a damaged one replaced or reported) every time, see the module's notes.
    """
    key = name.lower()
    if key not in CHECKSUMS:
        raise DataError(f"{name}: not a data set that can be fetched ({', '.join(CHECKSUMS)})")
    files = CHECKSUMS[key]
    for folder in LOCAL_DIRS.get(key, []):
        if _complete(folder, files):
            return folder
    return fetch_files(key, base_url(key), files, cache_dir(key))


def cache_dir(name: str) -> Path:
    """``$SIAMNET_DATA/<name>``, else ``$XDG_CACHE_HOME/siamnet/<name>`` (``~/.cache``)."""
    root = os.environ.get("SIAMNET_DATA")
    if root:
        return Path(os.path.expanduser(root)) / name
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "siamnet" / name


def base_url(name: str) -> str:
    """The URL the files of `name` are fetched from: ``SIAMNET_URL_<NAME>`` or the default."""
    env = "SIAMNET_URL_" + name.upper().replace("-", "_")
    url = os.environ.get(env) or BASE_URLS[name]
    return url if url.endswith("/") else url + "/"


def fetch_files(name: str, base_url: str, files: Mapping[str, str], dest: Path) -> Path:
    """Download each of `files` (file name -> ``"sha256:<hex>"`` or ``"md5:<hex>"``) from
    `base_url` into `dest`, verify it and, for a ``.zip``, extract it into ``dest/<stem>/``.

    A file already in `dest` is verified, not downloaded again; one with the wrong checksum is
    downloaded afresh, or reported when the server cannot be reached. Temporaries left in
    `dest` by killed runs are removed first. Raises `DataError` naming the URL when a download
    fails, is cut short or has the wrong checksum, and then nothing of that file is left in
    `dest`.
    """
    dest = Path(dest)
    try:
        if not dest.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the data folder ({exc.strerror or exc})") from exc
    remove_stale_temps(dest)
    for filename, checksum in files.items():
        target = dest / filename
        url = base_url + filename
        if filename.endswith(".zip") and (dest / target.stem).is_dir():
            target.unlink(missing_ok=True)  # extracted; a kill came before the zip was removed
            continue
        if target.is_file():
            problem = _mismatch(target, checksum)
            if problem is not None:
                _replace_damaged(target, url, checksum, problem)
        elif _present(dest, filename):
            continue  # the decompressed twin of a .gz, put there by hand (see the module)
        else:
            try:
                download(url, target, checksum)
            except _Unreachable as exc:
                raise DataError(_by_hand(name, base_url, files, dest, str(exc))) from exc
        if filename.endswith(".zip"):
            extract_zip(target, dest)
            target.unlink(missing_ok=True)
    return dest


def _replace_damaged(target: Path, url: str, checksum: str, problem: str) -> None:
    """Download `url` over the damaged cached file `target`; a `DataError` naming `target` when
    that is impossible (the damaged file is then left as it is, for a look, and never used)."""
    try:
        download(url, target, checksum)
    except _Unreachable as exc:
        raise DataError(
            f"{target}: {problem}; the file was not used and a fresh copy cannot be downloaded "
            f"({exc}); delete it and run again with a network, or replace it with a fresh copy "
            f"of {url}"
        ) from exc
    except DataError as exc:
        raise DataError(
            f"{target}: {problem}; the file was not used and downloading a fresh copy failed: {exc}"
        ) from exc


# --- download ----------------------------------------------------------------------------------
class _Unreachable(Exception):
    """The server could not be reached at all (no network, refused, unknown host)."""


def download(url: str, target: Path, checksum: str, timeout: float = TIMEOUT_S) -> None:
    """Fetch `url` into `target` through a temporary file beside it, verified by `checksum`.

    Raises `_Unreachable` when no connection can be made, `DataError` for anything else that
    goes wrong; either way no partial file remains.
    """
    algorithm, expected = _parse_checksum(checksum)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            digest, size, total = _stream(url, fh, algorithm, timeout, target.name)
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and size != total:
            raise DataError(
                f"{url}: download cut short after {size:,} of {total:,} bytes; run it again"
            )
        if digest != expected:
            raise DataError(
                f"{url}: checksum mismatch ({algorithm} {digest}, expected {expected}); the "
                "file was not kept; check the URL or try again"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(
    url: str, fh: IO[bytes], algorithm: str, timeout: float, label: str
) -> tuple[str, int, int | None]:
    """Copy the body of `url` into `fh`; its hex digest, its size and the announced size."""
    hasher = hashlib.new(algorithm)
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "siamnet"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with progress(
                total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024
            ) as bar:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    hasher.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP error {exc.code} ({exc.reason})") from exc
    except urllib.error.URLError as exc:
        raise _Unreachable(f"{url}: {exc.reason}") from exc
    except http.client.IncompleteRead as exc:
        raise DataError(
            f"{url}: download cut short after {size + len(exc.partial):,} bytes; run it again"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(
            f"{url}: download failed after {size:,} bytes ({exc}); run it again"
        ) from exc
    return hasher.hexdigest(), size, total


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, _, digest = checksum.partition(":")
    if algorithm not in ("sha256", "md5") or not digest:
        raise ValueError(f"checksum {checksum!r}: expected 'sha256:<hex>' or 'md5:<hex>'")
    return algorithm, digest.lower()


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of `path`'s bytes."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _mismatch(path: Path, checksum: str) -> str | None:
    """None when `path`'s bytes match `checksum`, else what is wrong, for a message."""
    algorithm, expected = _parse_checksum(checksum)
    try:
        found = file_digest(path, algorithm)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if found == expected:
        return None
    return f"checksum mismatch ({algorithm} {found}, expected {expected})"


# --- archives ----------------------------------------------------------------------------------
def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract `archive` into ``dest/<stem>/`` through a temporary folder renamed into place.

    A member with an absolute path or a ``..`` component is refused (`DataError`). When the
    archive holds one top folder named like it (``images_background/...``), that folder becomes
    ``dest/<stem>``; otherwise everything in the archive does.
    """
    final = dest / archive.stem
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(archive.stem), suffix=".new", dir=dest))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    _check_member(archive, member.filename)
                zf.extractall(tmp)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"{archive}: cannot extract this zip archive ({exc})") from exc
        top = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        source = top[0] if len(top) == 1 and top[0].is_dir() and top[0].name == final.name else tmp
        try:
            os.replace(source, final)
        except OSError as exc:
            if not final.is_dir():  # else another process extracted the same archive first
                raise DataError(
                    f"{final}: cannot put the extracted archive there ({exc.strerror or exc})"
                ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_member(archive: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise DataError(
            f"{archive}: refusing to extract {name!r}, a path outside the archive's folder"
        )


# --- presence ----------------------------------------------------------------------------------
def _present(folder: Path, filename: str) -> bool:
    """Whether `filename` is in `folder` in usable form: the file itself or, for ``.gz``, its
    decompressed twin; for a ``.zip``, the folder it extracts to."""
    if filename.endswith(".zip"):
        return (folder / filename.removesuffix(".zip")).is_dir()
    if (folder / filename).is_file():
        return True
    return filename.endswith(".gz") and (folder / filename.removesuffix(".gz")).is_file()


def _complete(folder: Path, files: Mapping[str, str]) -> bool:
    return folder.is_dir() and all(_present(folder, f) for f in files)


def _by_hand(name: str, base: str, files: Mapping[str, str], dest: Path, reason: str) -> str:
    urls = " ".join(base + f for f in files)
    names = ", ".join(files)
    return (
        f"cannot download {name} ({reason}); without a network, download {urls} elsewhere and "
        f"put {names} in {dest}"
    )
