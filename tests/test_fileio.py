"""Atomic writes: modes by the umask, one-line errors on a full disk, folder swaps that survive a
kill (the temporaries themselves: tests/test_temps.py)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from siamnet import fileio
from siamnet.fileio import (
    atomic_folder,
    atomic_path,
    atomic_write_files,
    atomic_write_text,
    save_torch,
    write_file,
)
from siamnet.temps import remove_stale_temps, restore_interrupted_swap


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_limited(code: str, limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run Python `code` with files limited to `limit` bytes (SIGXFSZ ignored, so a write past
    the limit fails with EFBIG instead of killing the process)."""
    prelude = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("umask", "file_bits", "folder_bits"),
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
    ids=["umask-022", "umask-077"],
)
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, file_bits, folder_bits):
    old = os.umask(umask)
    try:
        assert fileio.current_umask() == umask
        atomic_write_text(tmp_path / "a.json", "{}\n")
        save_torch(tmp_path / "b.pt", {"x": torch.zeros(3)})
        atomic_write_files([(tmp_path / "c.bin", b"c"), (tmp_path / "d.bin", b"d")])
        with atomic_folder(tmp_path / "folder") as tmp:
            write_file(tmp / "e.bin", b"e")
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt", "c.bin", "d.bin", "folder/e.bin"):
        assert mode(tmp_path / name) == file_bits, name
    assert mode(tmp_path / "folder") == folder_bits
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["x"], torch.zeros(3))


def test_temporary_names_carry_the_writers_pid(tmp_path):
    with atomic_path(tmp_path / "last.pt") as tmp:
        assert re.fullmatch(rf"\.last\.pt\.siamnet-{os.getpid()}-[a-z0-9_]{{8}}\.tmp", tmp.name)
        tmp.write_bytes(b"new")
    assert (tmp_path / "last.pt").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path):
    target = tmp_path / "last.pt"
    save_torch(target, {"w": torch.arange(10)})
    before = target.read_bytes()
    result = run_limited(
        """
        import torch
        from siamnet.errors import SiamnetError
        from siamnet.fileio import atomic_write_text, save_torch
        for write in (lambda: save_torch("last.pt", {"w": torch.randn(100_000)}),
                      lambda: atomic_write_text("last.pt", "x" * 100_000)):
            try:
                write()
            except SiamnetError as exc:
                print(exc)
        """,
        limit=50_000,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("no space left writing last.pt (the file size limit was reached)")
    assert "PytorchStreamWriter" not in result.stdout + result.stderr
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_full_disk_while_saving_a_figure_is_one_line(tmp_path):
    (tmp_path / "curves.png").write_bytes(b"old figure")
    result = run_limited(
        """
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from siamnet.errors import SiamnetError
        from siamnet.fileio import atomic_path
        fig = plt.figure(figsize=(20, 20))
        fig.gca().imshow([[i * j % 7 for i in range(500)] for j in range(500)])
        try:
            with atomic_path("curves.png") as tmp:
                fig.savefig(tmp, format="png", dpi=100)
        except SiamnetError as exc:
            print(exc)
        """,
        limit=20_000,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no space left writing curves.png (the file size limit")
    assert os.listdir(tmp_path) == ["curves.png"]
    assert (tmp_path / "curves.png").read_bytes() == b"old figure"


def test_a_full_disk_in_a_group_of_files_leaves_every_old_file(tmp_path):
    names = ["m.pt", "m.head.pt", "m.json"]
    for name in names:
        (tmp_path / name).write_text(f"old {name}")
    result = run_limited(
        """
        from siamnet.errors import SiamnetError
        from siamnet.fileio import atomic_write_files
        files = [("m.pt", b"small"), ("m.head.pt", b"x" * 100_000), ("m.json", b"{}")]
        try:
            atomic_write_files(files, remove_first=["m.json"])
        except SiamnetError as exc:
            print(exc)
        """,
        limit=50_000,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no space left writing m.head.pt (the file size limit")
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    assert all((tmp_path / n).read_text() == f"old {n}" for n in names)
    atomic_write_files([(tmp_path / n, b"new") for n in names], remove_first=[tmp_path / "m.json"])
    assert all((tmp_path / n).read_bytes() == b"new" for n in names)
    assert sorted(os.listdir(tmp_path)) == sorted(names)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_folder_is_replaced_as_a_whole_keeping_other_files(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    target = tmp_path / "g"
    target.mkdir()
    (target / "data.bin").write_bytes(b"old")
    (target / "notes.txt").write_text("mine")
    (target / "sub").mkdir()
    (target / "sub" / "x").write_text("x")
    with atomic_folder(target, keep_others=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".g.siamnet-{os.getpid()}-")
        write_file(tmp / "data.bin", b"new")
        assert (target / "data.bin").read_bytes() == b"old"  # untouched until the swap
    assert (target / "data.bin").read_bytes() == b"new"
    assert (target / "notes.txt").read_text() == "mine" and (
        target / "sub" / "x"
    ).read_text() == "x"
    assert os.listdir(tmp_path) == ["g"]


def test_a_folder_reached_through_a_link_is_replaced_where_it_is(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "data.bin").write_bytes(b"old")
    (tmp_path / "link").symlink_to(real)
    with atomic_folder(tmp_path / "link") as tmp:
        write_file(tmp / "data.bin", b"new")
    assert (tmp_path / "link").is_symlink() and (real / "data.bin").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "g"
    target.mkdir()
    (target / "data.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        write_file(tmp / "data.bin", b"new")
        raise RuntimeError("stopped")
    assert (target / "data.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["g"]


def test_a_kill_between_the_two_renames_leaves_the_old_folder_to_put_back(tmp_path):
    """Without a one-step exchange the old folder is renamed aside first; a kill right then
    leaves the path missing, and `restore_interrupted_swap` puts the old folder back."""
    target = tmp_path / "g"
    target.mkdir()
    (target / "data.bin").write_bytes(b"old")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, signal
                from siamnet import fileio
                fileio._exchange = lambda a, b: False
                real = os.rename
                def rename(src, dst):
                    if str(src).endswith(".new"):
                        os.kill(os.getpid(), signal.SIGKILL)
                    real(src, dst)
                os.rename = rename
                with fileio.atomic_folder("g") as tmp:
                    fileio.write_file(tmp / "data.bin", b"new")
                """
            ),
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == -9
    assert not target.exists()
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 2 and left[0].endswith(".new") and left[1].endswith(".old")
    restored = restore_interrupted_swap(target)
    assert restored is not None and restored.name == left[1]
    assert (target / "data.bin").read_bytes() == b"old"
    assert remove_stale_temps(tmp_path) == [tmp_path / left[0]]
    assert os.listdir(tmp_path) == ["g"]
