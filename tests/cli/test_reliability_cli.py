"""Reliability of writes through the installed command: ``index build --overwrite`` killed with
SIGKILL at seeded moments, a disk that fills up (a file size limit) during ``train`` and
``index build``, and temporary files of killed writers cleaned by the next run.

After any of these, the files a user had are intact: a search gives exactly the old gallery's
answer or exactly the new one's (or one ``siamnet: error:`` line), never a mix with exit status
0; a write that runs out of space is one line saying so and naming the file, the previous files
are byte-identical and no temporary file is left behind.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fuzz_cases import (  # noqa: E402
    ENV,
    SIAMNET,
    changed,
    problems,
    run_main,
    snapshot,
    tiny_run,
)

from helpers import limit_file_size  # noqa: E402

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, two folders of different digit images (the old and the new data), and
    the answers of a search in a gallery of each."""
    from siamnet.data.registry import load_dataset

    root = tmp_path_factory.mktemp("reliability")
    run = tiny_run(tmp_path_factory)
    model = root / "model.pt"
    shutil.copy(run / "best.pt", model)
    digits = load_dataset("digits").test
    by_class = [torch.nonzero(digits.labels == k).flatten().tolist() for k in range(10)]
    for name, offset in (("old", 0), ("new", 2)):
        for k in range(10):
            for j in range(2):
                path = root / name / str(k) / f"{j}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(digits.images[by_class[k][offset + j], 0].numpy()).save(path)
    query = root / "q.png"
    Image.fromarray(digits.images[by_class[5][5], 0].numpy()).save(query)
    s = {"root": root, "run": run, "model": model, "query": query}
    for name in ("old", "new"):
        gallery = root / f"gallery-{name}"
        done = run_main(["index", "build", model, "--data", root / name, "--out", gallery, *CPU])
        assert done.code == 0, (done.crash, done.stderr)
        s[f"gallery-{name}"] = gallery
        s[name] = search(gallery, query)
    assert s["old"] != s["new"]
    return s


def search(gallery: Path, query: Path) -> dict:
    done = run_main(["index", "search", gallery, query, "--json", "--top-k", "5", *CPU])
    assert done.code == 0, (done.crash, done.stderr)
    return answer(json.loads(done.stdout))


def answer(obj: dict) -> dict:
    """A search's JSON without the gallery's own path."""
    return {k: v for k, v in obj.items() if k != "gallery"}


def entries(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


def inodes(paths: list[Path]) -> list[int | None]:
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_ino)
        except FileNotFoundError:
            out.append(None)
    return out


# --- (a) killed between renames --------------------------------------------------------------


def build_cmd(s: dict, gallery: Path) -> list[str]:
    return [
        SIAMNET, "index", "build", str(s["model"]), "--data", str(s["root"] / "new"),
        "--out", str(gallery), "--overwrite", "--quiet", *CPU,
    ]  # fmt: skip


def kill_when(proc: subprocess.Popen, gallery: Path, trigger: str, delay: float, deadline: float):
    """SIGKILL `proc` `delay` seconds after `trigger` happens:

    - ``"write"``: a new entry appears beside the gallery or in it (a write has begun);
    - ``"rename"``: the gallery folder or one of its files is replaced by another (a rename).

    Returns ``"killed"``, or ``"finished"`` when the process ended first.
    """
    parent = gallery.parent
    watched = [gallery, gallery / "embeddings.pt", gallery / "gallery.json"]
    before_parent, before_inside, before_inodes = entries(parent), entries(gallery), inodes(watched)
    while proc.poll() is None and time.perf_counter() < deadline:
        if trigger == "write":
            hit = entries(parent) != before_parent or entries(gallery) != before_inside
        else:
            hit = inodes(watched) != before_inodes
        if hit:
            if delay:
                time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "killed"
        time.sleep(0.0002)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return "killed"
    return "finished"


#: (trigger, delay in seconds): right when the write begins, at seeded random moments of the
#: few milliseconds after it (where the renames are), and right at a rename.
_rng = random.Random(20240611)
KILLS = [("write", 0.0), ("write", round(_rng.uniform(0.0, 0.004), 5))]
KILLS += [("rename", 0.0), ("rename", round(_rng.uniform(0.0, 0.001), 5))]


@pytest.mark.slow
def test_index_build_overwrite_killed_at_seeded_moments_leaves_old_or_new(setup, tmp_path):
    """Each kill leaves a gallery whose search gives exactly the old answer or exactly the new
    one, or is refused with one line; never a third answer with exit status 0."""
    report, failures = [], []
    for i, (trigger, delay) in enumerate(KILLS):
        folder = tmp_path / f"try{i}"
        folder.mkdir()
        gallery = shutil.copytree(setup["gallery-old"], folder / "gallery")
        inputs = [setup["root"] / "old", setup["root"] / "new", setup["model"]]
        before = snapshot(*inputs)
        proc = subprocess.Popen(
            build_cmd(setup, gallery),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        how = kill_when(proc, gallery, trigger, delay, time.perf_counter() + 120)
        outcome = run_main(
            ["index", "search", gallery, setup["query"], "--json", "--top-k", "5", *CPU]
        )
        if outcome.code == 0:
            got = answer(json.loads(outcome.stdout))
            state = "old" if got == setup["old"] else "new" if got == setup["new"] else "MIXED"
        else:
            state = "refused"
        found = problems(outcome, ["gallery"], [setup["old"], setup["new"]], answer)
        found += changed(before, snapshot(*inputs))
        if how == "finished" and state != "new":
            found.append(f"the build finished but the gallery gives the {state} answer")
        report.append(f"try {i} ({trigger} +{delay}s): {how}, {state}")
        if found:
            failures.append(f"try {i} ({trigger} +{delay}s, {how}): {'; '.join(found)}")
    assert not failures, "\n".join([*failures, "", *report])


# --- (b) no space left -----------------------------------------------------------------------


def assert_no_space_refusal(done: subprocess.CompletedProcess, names: list[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siamnet: error: "), done.stderr[-2000:]
    assert "no space left" in lines[0].lower(), lines[0]
    assert any(n in lines[0] for n in names), lines[0]
    return lines[0]


@pytest.mark.slow
def test_train_resume_with_no_space_left_keeps_the_run_as_it_was(setup, tmp_path):
    run = shutil.copytree(setup["run"], tmp_path / "run")
    before, listing = snapshot(run), sorted(os.listdir(tmp_path))
    limit = 64 * 1024
    assert (run / "best.pt").stat().st_size > limit
    done = subprocess.run(
        [SIAMNET, "train", "--resume", str(run), "--epochs", "2", "--quiet", *CPU],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size(limit),
    )
    assert_no_space_refusal(done, ["best.pt", "last.pt"])
    assert not changed(before, snapshot(run)), changed(before, snapshot(run))
    assert sorted(os.listdir(tmp_path)) == listing


@pytest.mark.slow
def test_index_build_with_no_space_left_keeps_the_old_gallery(setup, tmp_path):
    gallery = shutil.copytree(setup["gallery-old"], tmp_path / "gallery")
    before, listing = snapshot(gallery), sorted(os.listdir(tmp_path))
    limit = min(p.stat().st_size for p in gallery.iterdir()) // 2  # too small for either file
    done = subprocess.run(
        build_cmd(setup, gallery),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size(limit),
    )
    assert_no_space_refusal(done, ["embeddings.pt", "gallery.json", str(gallery)])
    assert not changed(before, snapshot(gallery)), changed(before, snapshot(gallery))
    assert sorted(os.listdir(tmp_path)) == listing
    assert search(gallery, setup["query"]) == setup["old"]


# --- (c) temporary files of killed writers ---------------------------------------------------

#: A writer killed with SIGKILL in the middle of an atomic write, with siamnet's own naming.
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import siamnet.fileio as fileio
kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "folder":
    writer = fileio.atomic_folder(target)
    tmp = writer.__enter__()
    (tmp / "embeddings.pt").write_bytes(b"partial")
else:
    writer = fileio.atomic_path(target)
    tmp = writer.__enter__()
    tmp.write_bytes(b"partial")
os.kill(os.getpid(), signal.SIGKILL)
"""


def leave_killed_writer(kind: str, target: Path) -> set[str]:
    """Run a writer of `target` that is killed mid-write; the names it left beside `target`
    (or in its parent, for a folder)."""
    folder = target.parent
    before = entries(folder)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, kind, str(target)], env=ENV)
    if done.returncode == 0:
        return set()
    assert done.returncode == -signal.SIGKILL
    left = entries(folder) - before
    assert left, f"the killed writer of {target} left nothing"
    return left


def temporaries(folder: Path) -> set[str]:
    """Entries of `folder` named like temporary files (hidden, ``.tmp``/``.new``/``.old``)."""
    return {
        n for n in entries(folder) if n.startswith(".") and n.endswith((".tmp", ".new", ".old"))
    }


@pytest.mark.slow
def test_stale_temporaries_in_a_run_folder_are_removed_by_the_next_run(setup, tmp_path):
    run = shutil.copytree(setup["run"], tmp_path / "run")
    stale = leave_killed_writer("file", run / "last.pt")
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        live = run / f".metrics.csv.siamnet-{sleeper.pid}-abcdefgh.tmp"
        live.write_bytes(b"being written by a running process")
        done = run_main(["train", "--resume", run, "--epochs", "2", "--quiet", *CPU])
        assert done.code == 0, (done.crash, done.stderr)
        assert not stale & entries(run), f"left behind: {sorted(stale & entries(run))}"
        assert live.exists(), "removed the temporary file of a process that is still running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert temporaries(run) == {live.name}


@pytest.mark.slow
def test_stale_temporaries_of_a_gallery_are_removed_by_the_next_build(setup, tmp_path):
    gallery = shutil.copytree(setup["gallery-old"], tmp_path / "gallery")
    stale_beside = leave_killed_writer("folder", gallery)
    stale_inside = leave_killed_writer("file", gallery / "embeddings.pt")
    done = run_main(["index", "build", setup["model"], "--data", setup["root"] / "new"] + [
        "--out", gallery, "--overwrite", "--quiet", *CPU,
    ])  # fmt: skip
    assert done.code == 0, (done.crash, done.stderr)
    assert not stale_beside & entries(tmp_path), sorted(stale_beside & entries(tmp_path))
    assert not stale_inside & entries(gallery), sorted(stale_inside & entries(gallery))
    assert not temporaries(tmp_path) and not temporaries(gallery)
    assert search(gallery, setup["query"]) == setup["new"]
