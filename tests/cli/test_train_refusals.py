"""`siamnet train` checks every argument before it touches the disk: each mistyped value, with
``--overwrite`` on a finished run, is one error line (exit 2) and the run folder stays
byte-identical; a folder that is not a run folder is never replaced; the command line's own
defaults are all ``None``, so that the presets are the one home of every default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from siamnet.cli import build_parser
from siamnet.presets import PRESETS, RUN_DEFAULTS
from siamnet.train import TrainConfig

from helpers import refused, siamnet

QUICK = ["--model", "seed-cnn", "--loss", "contrastive", "--epochs", "1", "--steps-per-epoch", "2"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    done = siamnet("train", *QUICK, "--quiet", "--out", run)
    assert done.returncode == 0, done.stderr
    return run


MISTYPED = [
    (["--model", "conv5"], "--model"),
    (["--schedule", "cosin"], "--schedule 'cosin'"),
    (["--lr", "-1"], "--lr -1"),
    (["--lr", "nan"], "--lr nan"),
    (["--momentum", "-1"], "--momentum -1"),
    (["--image-size", "0"], "--image-size"),
    (["--image-size", "abc"], "--image-size 'abc'"),
    (["--image-size", "100000"], "at most 4096"),
    (["--eval-classes", ","], "--eval-classes"),
    (["--time-budget", "xyz"], "--time-budget 'xyz'"),
    (["--time-budget", "-5"], "--time-budget '-5'"),
    (["--time-budget", "nan"], "--time-budget 'nan'"),
    (["--ways", "1"], "--ways 1"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--weight-decay", "inf"], "--weight-decay inf"),
    (["--device", "cuda:7"], "--device"),
    (["--eval-classes", "6,42"], "42"),
]


@pytest.mark.parametrize("args,fragment", MISTYPED, ids=[" ".join(a) for a, _ in MISTYPED])
def test_a_mistyped_value_leaves_a_finished_run_byte_identical(finished_run, args, fragment):
    before = snapshot(finished_run)
    result = siamnet("train", *QUICK, "--out", finished_run, "--overwrite", *args)
    refused(result, fragment)
    assert snapshot(finished_run) == before


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path):
    thesis = tmp_path / "p"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    refused(siamnet("train", *QUICK, "--out", thesis, "--overwrite"), "not a siamnet run folder")
    assert (thesis / "thesis.tex").read_text() == "years of work"
    (tmp_path / "keep.txt").write_text("here")
    refused(siamnet("train", *QUICK, "--out", ".", "--overwrite", cwd=tmp_path), "--out .")
    assert (tmp_path / "keep.txt").read_text() == "here"


def test_unusable_output_paths_are_one_line(tmp_path, finished_run):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(finished_run, target_is_directory=True)
    before = snapshot(finished_run)
    refused(siamnet("train", *QUICK, "--out", a_file), "--out")
    refused(siamnet("train", *QUICK, "--out", a_file / "run"), "--out")
    refused(siamnet("train", *QUICK, "--out", "/proc/x"), "--out")
    refused(siamnet("train", *QUICK, "--out", link, "--overwrite"), "symbolic link")
    assert a_file.read_text() == "x" and snapshot(finished_run) == before


def test_the_command_line_has_no_defaults_of_its_own():
    parser = build_parser()
    train = next(
        action.choices["train"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    fields = set(TrainConfig.__dataclass_fields__)
    for action in train._actions:
        if action.dest in fields:
            assert action.default in (None, False), action.dest
    # what a run gets when nothing is given comes from the presets' tables
    for preset, values in PRESETS.items():
        resolved = TrainConfig(preset=preset).resolved()
        for name, value in {**RUN_DEFAULTS, **values}.items():
            assert getattr(resolved, name) == value, (preset, name)
