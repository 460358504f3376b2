"""`siamnet index` end to end with saved FAISS indexes and concurrent writers: a gallery built
with an index is searched by its own method (named with nprobe / ef_search) and --exact; a
damaged index file is one line; two `index add` at once both land; the same folder added twice
adds nothing; two builds to one --out: the second refuses; a killed build leaves the old
gallery whole and loadable."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from siamnet.gallery import load_gallery

from helpers import ENV, SIAMNET, refused, siamnet
from shapes_model import SHAPES, shape_png, write_checkpoint, write_shape_folder

pytestmark = pytest.mark.slow

CPU = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("index-cli")
    write_checkpoint(root / "model.pt", "contrastive")
    for name, per_class, seed in (("a", 5, 601), ("b", 3, 602), ("c", 3, 603), ("big", 40, 604)):
        write_shape_folder(root / name, per_class=per_class, seed=seed)
    queries = root / "queries"
    queries.mkdir()
    for i, shape in enumerate(SHAPES):
        shape_png(queries / f"{i}-{shape}.png", shape, seed=700 + i)
    return root


def run(*args: object) -> subprocess.CompletedProcess:
    return siamnet(*args, *CPU)


def ok_json(*args: object) -> dict:
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [SIAMNET, *map(str, args), *CPU, "--json"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def indices(found: dict) -> list[list[int]]:
    return [[m["index"] for m in r["matches"]] for r in found["results"]]


def test_a_gallery_searches_by_its_own_index_and_names_it(files, tmp_path):
    g = tmp_path / "g"
    built = ok_json(
        "index", "build", files / "model.pt", "--data", files / "big", "--out", g,
        "--method", "ivf-pq", "--nlist", "4", "--m", "21", "--nbits", "4", "--nprobe", "2",
    )  # fmt: skip
    assert built["method"] == "ivf-pq" and built["items"] == 160
    assert built["index"]["nlist"] == 4 and built["index"]["m"] == 21
    assert (g / "index.faiss").is_file()
    own = ok_json("index", "search", g, files / "queries", "--top-k", "5")
    assert own["method"] == "ivf-pq" and own["nprobe"] == 2
    more = ok_json("index", "search", g, files / "queries", "--top-k", "5", "--nprobe", "4")
    assert more["nprobe"] == 4
    exact = ok_json("index", "search", g, files / "queries", "--top-k", "5", "--exact")
    assert exact["method"] == "exact" and "nprobe" not in exact
    for r in own["results"] + exact["results"]:
        assert r["matches"][0]["label"] == Path(r["query"]).stem.split("-")[1]
    text = run("index", "search", g, files / "queries" / "0-bar.png", "--top-k", "1")
    assert text.returncode == 0 and text.stdout.startswith("# ivf-pq search (nprobe 2)")

    h = tmp_path / "h"
    ok_json(
        "index", "build", files / "model.pt", "--data", files / "big", "--out", h,
        "--method", "hnsw", "--hnsw-m", "8", "--ef-search", "200",
    )  # fmt: skip
    graph = ok_json("index", "search", h, files / "queries", "--top-k", "5")
    assert graph["method"] == "hnsw" and graph["ef_search"] == 200
    assert indices(graph) == indices(exact)  # a wide search of a small graph finds them all


def test_index_options_are_checked_before_any_work(files, tmp_path):
    out = tmp_path / "g"
    build = ("index", "build", files / "model.pt", "--data", files / "a", "--out", out)
    refused(run(*build, "--method", "hnsw", "--nlist", "4"), "--nlist 4", "ivf-flat or ivf-pq")
    refused(run(*build, "--method", "ivf-pq", "--m", "5"), "--m 5", "embedding size 84")
    refused(run(*build, "--method", "ivf-flat", "--nprobe", "0"), "--nprobe 0")
    refused(run(*build, "--lock-wait", "-1"), "--lock-wait -1")
    assert not out.exists()
    ok_json(*build)
    search = ("index", "search", out, files / "queries")
    refused(run(*search, "--exact", "--method", "rerank"), "--exact and --method rerank")
    refused(run(*search, "--method", "hnsw"), "no hnsw index", "its method is exact")
    refused(run(*search, "--nprobe", "4"), "--nprobe 4: applies to an inverted-file", "is exact")
    refused(run(*search, "--ef-search", "9"), "--ef-search 9: applies to an hnsw search")


def test_a_damaged_index_file_is_refused_in_one_line(files, tmp_path):
    g = tmp_path / "g"
    ok_json("index", "build", files / "model.pt", "--data", files / "a", "--out", g,
            "--method", "ivf-flat", "--nlist", "2")  # fmt: skip
    raw = bytearray((g / "index.faiss").read_bytes())
    raw[-5] ^= 0x55
    (g / "index.faiss").write_bytes(bytes(raw))
    for args in (
        ("index", "search", g, files / "queries"),
        ("index", "add", g, "--data", files / "b"),
    ):
        refused(run(*args), str(g / "index.faiss"), "does not belong with gallery.json")


def test_adding_the_same_folder_twice_adds_nothing_the_second_time(files, tmp_path):
    g = tmp_path / "g"
    ok_json("index", "build", files / "model.pt", "--data", files / "a", "--out", g,
            "--method", "flat")  # fmt: skip
    first = ok_json("index", "add", g, "--data", files / "b")
    assert first["added"] == 12 and first["already_held"] == 0 and first["items"] == 32
    again = ok_json("index", "add", g, "--data", files / "b", "--data", files / "a")
    assert again["added"] == 0 and again["already_held"] == 32 and again["items"] == 32
    text = run("index", "add", g, "--data", files / "b")
    assert "0 added, 12 already in the gallery" in text.stdout
    # the same images under another spelling of their folder: held too
    moved = shutil.copytree(files / "b", tmp_path / "b-copy")
    assert ok_json("index", "add", g, "--data", moved)["added"] == 0
    loaded = load_gallery(g)
    assert len(loaded) == len(set(loaded.files)) == loaded.index.ntotal == 32


def test_two_adds_at_once_both_land(files, tmp_path):
    g = tmp_path / "g"
    ok_json("index", "build", files / "model.pt", "--data", files / "a", "--out", g,
            "--method", "ivf-flat", "--nlist", "2")  # fmt: skip
    procs = [start("index", "add", g, "--data", files / name) for name in ("b", "c")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert json.loads(out)["added"] == 12
    loaded = load_gallery(g)
    expected = {str(p) for name in ("a", "b", "c") for p in (files / name).rglob("*.png")}
    assert len(loaded) == 44 and set(loaded.files) == expected  # every item, none twice
    assert loaded.index.ntotal == 44
    assert not (tmp_path / ".g.siamnet-lock").exists()


def test_two_builds_to_one_folder_the_second_refuses(files, tmp_path):
    g = tmp_path / "g"
    procs = [
        start("index", "build", files / "model.pt", "--data", files / name, "--out", g)
        for name in ("b", "c")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    winner = next(i for i, p in enumerate(procs) if p.returncode == 0)
    loser_err = outs[1 - winner][1].strip().splitlines()
    assert len(loser_err) == 1 and "a gallery is already there" in loser_err[0], loser_err
    name = ("b", "c")[winner]
    expected = {str(p) for p in (files / name).rglob("*.png")}
    assert set(load_gallery(g).files) == expected


def kill_when_writing(proc: subprocess.Popen, g: Path, delay: float) -> None:
    """SIGKILL `proc` `delay` seconds after it takes the gallery's lock (its write begins)."""
    lock = g.parent / f".{g.name}.siamnet-lock"
    deadline = time.monotonic() + 240
    while proc.poll() is None and not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_build_leaves_the_old_gallery_whole(files, tmp_path):
    """`index build --overwrite` of a larger folder with an index, killed with SIGKILL at
    seeded moments of its write: the gallery loads with every file checked, old or (if the
    swap was done) new, never a mix; the next build cleans up and replaces it."""
    old = tmp_path / "old"
    ok_json("index", "build", files / "model.pt", "--data", files / "a", "--out", old,
            "--method", "ivf-flat", "--nlist", "2")  # fmt: skip
    old_files = set(load_gallery(old).files)
    new_files = {str(p) for p in (files / "big").rglob("*.png")}
    rng = random.Random(30)
    build = [
        SIAMNET, "index", "build", str(files / "model.pt"), "--data", str(files / "big"),
        "--overwrite", "--method", "hnsw", "--hnsw-m", "8", *CPU, "--out",
    ]  # fmt: skip
    outcomes = []
    for i, delay in enumerate([0.0, rng.uniform(0.0, 0.01), rng.uniform(0.0, 0.05)]):
        g = shutil.copytree(old, tmp_path / f"try{i}")
        proc = subprocess.Popen([*build, str(g)], env=ENV, stderr=subprocess.DEVNULL)
        kill_when_writing(proc, g, delay)
        loaded = load_gallery(g)
        state = set(loaded.files)
        assert state in (old_files, new_files), f"try {i}: a mix"
        assert loaded.index.ntotal == len(loaded)
        outcomes.append("old" if state == old_files else "new")
    assert outcomes[0] == "old", outcomes  # killed as the write began
    done = subprocess.run([*build, str(tmp_path / "try0")], env=ENV, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert set(load_gallery(tmp_path / "try0").files) == new_files
