"""Output paths checked before anything is written: one `ArgumentError` line naming the flag
and the path for each kind of unusable path, and nothing left behind by the check."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from siamnet.errors import ArgumentError
from siamnet.outpaths import check_output_dir, check_output_file

CHECKS = [check_output_file, check_output_dir]


def refusal(check, path, flag: str = "--out") -> str:
    with pytest.raises(ArgumentError) as info:
        check(path, flag)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{flag} {path}"), message
    return message


@pytest.mark.parametrize("check", CHECKS)
def test_usable_paths_are_returned_and_nothing_is_written(tmp_path, monkeypatch, check):
    monkeypatch.chdir(tmp_path)
    for path in (tmp_path / "out", tmp_path / "new" / "deeper" / "out", Path("rel-out")):
        assert check(path, "--out") == path
    assert os.listdir(tmp_path) == []  # the probe file is gone, missing folders not made


@pytest.mark.parametrize("check", CHECKS)
def test_a_parent_that_is_a_file_is_refused(tmp_path, check):
    (tmp_path / "FILE").write_text("x")
    for path in (tmp_path / "FILE" / "x.png", tmp_path / "FILE" / "a" / "x.png"):
        assert "FILE is a file, not a folder" in refusal(check, path)
    assert sorted(os.listdir(tmp_path)) == ["FILE"]


def test_a_folder_where_a_file_is_expected_and_the_reverse(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    assert "is a folder; expected a file" in refusal(check_output_file, tmp_path / "d")
    assert "is a file; expected a folder" in refusal(check_output_dir, tmp_path / "f", "--figures")
    assert check_output_dir(tmp_path / "d", "--out") == tmp_path / "d"
    assert check_output_file(tmp_path / "f", "--out") == tmp_path / "f"  # replaced later


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("path", ["/proc/siamnet-out", "/proc/a/b/out", "/sys/siamnet-out"])
def test_a_parent_where_nothing_can_be_made_is_refused(check, path):
    assert "cannot write in /" in refusal(check, path)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_or_forbidden_folder_is_refused(tmp_path, monkeypatch, check, code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    assert os.strerror(code) in refusal(check, tmp_path / "out")


@pytest.mark.parametrize("check", CHECKS)
def test_dangling_symbolic_links_are_refused(tmp_path, check):
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    assert "symbolic link" in refusal(check, tmp_path / "link")
    assert "which does not exist" in refusal(check, tmp_path / "link" / "x")


def test_a_link_to_a_folder_is_checked_where_it_points(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert check_output_dir(tmp_path / "link", "--out") == tmp_path / "link"
