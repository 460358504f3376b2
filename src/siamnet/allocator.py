"""Keep freed memory in the process heap for reuse, so training steps stop faulting pages in.

Each training step frees and reallocates the same large activation and gradient buffers
(a batch of 200 seed-cnn images has 21 MB of first-layer activations; conv4's are larger). glibc
serves blocks that large with ``mmap``, returns them to the kernel with ``munmap`` when they are
freed, and trims the heap top above 128 KiB: so every step asks the kernel for fresh pages
again, and the kernel zero-fills each one on first touch. Counted with ``getrusage``, 60
seed-cnn steps took 1.47 M minor page faults; with freed memory kept in the heap, 0.1 M.
Measured side by side in ``bench/train_throughput.py``.

This is what PyTorch's CPU performance guide gets by preloading jemalloc or tcmalloc, done here
in process with glibc's ``mallopt``: no ``mmap`` for the main heap's large blocks and no trim
of its top. Threads' own arenas still map blocks larger than their 64 MB heaps. The cost is a
resident size that stays at the step's peak instead of falling between steps. Only glibc has
``mallopt``; elsewhere (macOS, Windows, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def glibc_version() -> str:
    """The C library's version (``"glibc 2.36"``) where it is glibc, else ``""``."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return ""
    return version if version.startswith("glibc") else ""


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks for reuse: no trimming of the heap top and no ``mmap``
    for large blocks in the main heap. Returns whether the setting took (glibc only); calling
    it again does nothing."""
    if not sys.platform.startswith("linux") or not glibc_version():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trimmed = mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    mapped = mallopt(M_MMAP_MAX, 0)
    return bool(trimmed and mapped)
