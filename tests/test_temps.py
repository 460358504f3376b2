"""Temporaries: those that processes which are gone left are removed, those of running ones and
files that are not siamnet's are kept, and an interrupted folder swap is put back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siamnet.errors import SiamnetError
from siamnet.temps import remove_stale_temps, restore_interrupted_swap


def dead_pid() -> int:
    """The process id of a process that has finished."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def age(path: Path, seconds: float) -> None:
    """Make `path` look `seconds` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_restore_refuses_while_the_writer_is_running(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = tmp_path / f".g.siamnet-{writer.pid}-abcdefgh.old"
        old.mkdir()
        with pytest.raises(SiamnetError, match=f"being replaced by process {writer.pid}"):
            restore_interrupted_swap(tmp_path / "g")
        assert remove_stale_temps(tmp_path) == [] and old.is_dir()
    finally:
        writer.kill()
        writer.wait()


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    gone, me = dead_pid(), os.getpid()
    dead_file = tmp_path / f".last.pt.siamnet-{gone}-abcdefgh.tmp"
    live_file = tmp_path / f".best.pt.siamnet-{me}-abcdefgh.tmp"
    reused_pid = tmp_path / f".metrics.csv.siamnet-{me}-abcdefg1.tmp"  # alive, but two days old
    dead_new = tmp_path / f".g.siamnet-{gone}-abcdefgh.new"
    dead_old = tmp_path / f".g.siamnet-{gone}-abcdefg2.old"  # g exists: just a leftover
    lost_old = tmp_path / f".h.siamnet-{gone}-abcdefgh.old"  # h is missing: to put back
    for f in (dead_file, live_file, reused_pid):
        f.write_bytes(b"partial")
    for d in (dead_new, dead_old, lost_old, tmp_path / "g"):
        d.mkdir()
        (d / "embeddings.pt").write_bytes(b"x")
    age(reused_pid, 2 * 86400)
    names = [".bashrc", "notes.tmp", ".x.abc.tmp", ".last.pt.abcdefgh.tmp"]
    keep = [tmp_path / name for name in names]
    for f in keep:
        f.write_text("not ours")
        age(f, 2 * 86400)
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead_file, reused_pid, dead_new, dead_old])
    assert (tmp_path / "h" / "embeddings.pt").is_file() and not lost_old.exists()
    assert live_file.exists() and all(f.exists() for f in keep)
    assert remove_stale_temps(tmp_path / "missing") == []
