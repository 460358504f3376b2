"""Freed memory kept in the heap: page faults of a repeated large allocation, in fresh processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from siamnet.allocator import glibc_version, keep_freed_memory

GLIBC = sys.platform.startswith("linux") and bool(glibc_version())

# Ten training steps (forward, backward) of a small conv net on a 256-image batch, after two
# warm-up steps; prints the minor page faults of those ten steps. Each step frees and reallocates
# the same activation and gradient buffers, which glibc by default hands back to the kernel.
FAULTS = textwrap.dedent(
    """
    import resource, sys, torch
    from siamnet.allocator import keep_freed_memory
    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 64),
    )
    x = torch.rand(256, 1, 28, 28)
    def step():
        net.zero_grad()
        net(x).square().mean().backward()
    for _ in range(2):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def faults(allocator: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, allocator], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_freed_memory_stops_refaulting_large_blocks():
    default, kept = faults("default"), faults("kept")
    # measured here: about 600,000 faults by default, 25,000 with freed memory kept
    assert default > 50_000
    assert kept * 5 < default


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_takes_once_on_glibc():
    assert glibc_version().startswith("glibc ")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
