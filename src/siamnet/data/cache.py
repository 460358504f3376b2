"""Whether a folder's images are held decoded in memory (``--cache``): ``on``, ``off``, or
``auto``, which caches when the decoded set at the training size fits under `cache_limit`."""

from __future__ import annotations

from pathlib import Path

from siamnet.errors import ArgumentError
from siamnet.presets import CACHE_LIMIT_GB, CACHE_MEMORY_FRACTION, CHOICES

CACHE_CHOICES = CHOICES["cache"]


def check_cache(cache: str) -> str:
    """`cache` if it is one of ``auto``, ``on``, ``off``; an `ArgumentError` otherwise."""
    if cache not in CACHE_CHOICES:
        raise ArgumentError(f"--cache {cache!r}: expected one of {', '.join(CACHE_CHOICES)}")
    return cache


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's ``MemAvailable``), or None where
    it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_limit() -> int:
    """Bytes ``--cache auto`` may hold decoded: `CACHE_LIMIT_GB`, and at most
    `CACHE_MEMORY_FRACTION` of the available memory."""
    limit = int(CACHE_LIMIT_GB * 2**30)
    available = available_memory()
    if available is not None:
        limit = min(limit, int(available * CACHE_MEMORY_FRACTION))
    return limit


def wants_cache(nbytes: int, cache: str) -> bool:
    """Whether a set of `nbytes` decoded bytes is held in memory under ``--cache`` `cache`."""
    cache = check_cache(cache)
    return cache == "on" or (cache == "auto" and nbytes <= cache_limit())


def describe_limit() -> str:
    """``"2.0 GB"``: the current ``--cache auto`` limit, for notes."""
    return f"{cache_limit() / 2**30:.1f} GB"
