"""`siamnet compare|classify|index|export` end to end through the installed command, on a small
model trained in the test; bad checkpoints and bad images."""

from __future__ import annotations

import importlib.util
import json
import pickle
import random
import shutil
from pathlib import Path

import pytest

from helpers import refused, siamnet
from shapes_model import SHAPES, shape_png, write_checkpoint, write_shape_folder

pytestmark = pytest.mark.slow


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def ok_json(*args: object) -> dict:
    result = siamnet(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer-cli")
    run = root / "run"
    run.mkdir()
    write_checkpoint(run / "best.pt", "contrastive")  # a run folder
    write_checkpoint(root / "bce.pt", "bce")
    write_shape_folder(root / "support", per_class=2, seed=201)
    queries = root / "queries"
    queries.mkdir()
    for i, shape in enumerate(SHAPES * 2):
        shape_png(queries / f"{i}-{shape}.png", shape, seed=300 + i)
    pen = root / "pen"  # black-on-white drawings
    pen.mkdir()
    for i, shape in enumerate(SHAPES):
        shape_png(pen / f"{i}-{shape}.png", shape, seed=400 + i, invert=True)
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def truth(path: str) -> str:
    return Path(path).stem.split("-", 1)[1]


def test_every_verb_has_help_with_an_example():
    for verb in (["compare"], ["classify"], ["index"], ["index", "search"], ["export"]):
        result = siamnet(*verb, "--help")
        assert result.returncode == 0 and "example:" in result.stdout


def test_compare(files):
    q = files / "queries"
    same = siamnet("compare", files / "run", q / "0-bar.png", q / "4-bar.png")
    assert same.returncode == 0 and same.stdout.startswith("same: score")
    strict = ok_json("compare", files / "run", q / "0-bar.png", q / "4-bar.png", "--threshold", "1")
    assert strict["same"] is False and strict["threshold"] == 1.0  # -distance is never >= 1
    assert strict["distance"] == pytest.approx(-strict["score"])
    bce = ok_json("compare", files / "bce.pt", q / "0-bar.png", q / "2-ring.png")
    assert bce["same"] is False and 0 < bce["score"] < bce["threshold"] and bce["distance"] is None


def test_compare_refuses_a_corrupt_image(files):
    q = files / "queries"
    inputs = [files / "run" / "best.pt", q / "0-bar.png", files / "broken.png"]
    contents = [path.read_bytes() for path in inputs]
    names = sorted(p.name for p in (files / "run").iterdir())
    refused(
        siamnet("compare", files / "run", q / "0-bar.png", files / "broken.png"),
        "broken.png",
        "not a readable image",
    )
    assert [path.read_bytes() for path in inputs] == contents  # nothing rewritten
    assert sorted(p.name for p in (files / "run").iterdir()) == names  # nothing added


def test_classify_skips_a_corrupt_query_and_exits_1(files):
    result = siamnet(
        "classify", files / "run", "--support", files / "support",
        "--query", files / "queries", "--query", files / "broken.png", "--json",
    )  # fmt: skip
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    out = json.loads(result.stdout)
    assert out["support"]["classes"] == sorted(SHAPES)
    assert [Path(s["file"]).name for s in out["skipped"]] == ["broken.png"]
    predictions = out["predictions"]
    assert len(predictions) == 8
    assert all(p["label"] == truth(p["file"]) for p in predictions)
    assert all(p["runner_up"] != p["label"] and not p["unknown"] for p in predictions)


def test_classify_rejects_below_a_threshold(files):
    result = siamnet(
        "classify", files / "run", "--support", files / "support",
        "--query", files / "queries" / "0-bar.png", "--reject-below", "0.5",
    )  # fmt: skip
    assert result.returncode == 0
    file, answer, _, best, runner_up = result.stdout.strip().split("\t")
    assert (answer, best) == ("unknown", "(best bar)") and runner_up.startswith("runner-up ")


def test_classify_with_invert_reads_black_on_white_drawings(files, tmp_path):
    """A model trained on white-on-black shapes, a support set and queries drawn black on
    white: --invert brings both to the training polarity."""
    support = write_shape_folder(tmp_path / "pen-support", per_class=1, seed=501, invert=True)
    out = ok_json(
        "classify", files / "run", "--support", support, "--query", files / "pen", "--invert"
    )
    assert len(out["predictions"]) == 4
    assert all(p["label"] == truth(p["file"]) for p in out["predictions"])


def test_index_build_add_search(files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(files / "support", data)
    shutil.copy(files / "broken.png", data / "ring" / "broken.png")
    gallery = tmp_path / "gallery"
    result = siamnet("index", "build", files / "run", "--data", data, "--out", gallery, "--json")
    assert result.returncode == 1 and "broken.png" in result.stderr  # skipped, named
    built = json.loads(result.stdout)
    assert built["items"] == 8 and built["labelled"] == 8 and built["dim"] == 84
    assert len(built["skipped"]) == 1
    found = ok_json("index", "search", gallery, files / "queries", "--top-k", "3")
    assert len(found["results"]) == 8
    for r in found["results"]:
        assert [m["rank"] for m in r["matches"]] == [1, 2, 3]
        assert r["matches"][0]["label"] == truth(r["query"])
        assert r["matches"][0]["same"] is True
    added = ok_json("index", "add", gallery, "--data", files / "queries")
    assert added["items"] == 16 and added["added"] == 8 and added["labelled"] == 8
    text = siamnet("index", "search", gallery, files / "queries" / "0-bar.png", "--top-k", "1")
    assert text.returncode == 0
    query, match = text.stdout.splitlines()
    rank, score, file, *_ = match.strip().split("\t")
    assert rank == "1." and Path(file).name == "0-bar.png"  # the image itself, added
    assert float(score) == pytest.approx(0.0, abs=1e-3)


def test_index_refusals(files, tmp_path):
    gallery = tmp_path / "gallery"
    ok_json("index", "build", files / "run", "--data", files / "support", "--out", gallery)
    before = (gallery / "gallery.json").read_text()
    refused(
        siamnet("index", "build", files / "run", "--data", files / "queries", "--out", gallery),
        "already there",
    )
    refused(
        siamnet(
            "index", "add", gallery, "--data", files / "queries", "--checkpoint", files / "bce.pt"
        ),
        "bce.pt",
        str((files / "run").resolve()),
    )
    assert (gallery / "gallery.json").read_text() == before


def test_index_search_methods_on_an_l1_gallery(files, tmp_path):
    gallery = tmp_path / "gallery"
    ok_json("index", "build", files / "bce.pt", "--data", files / "support", "--out", gallery)
    exact = ok_json("index", "search", gallery, files / "queries", "--top-k", "8")
    assert all(r["matches"][0]["label"] == truth(r["query"]) for r in exact["results"])
    method = "faiss" if _importable("faiss") else "rerank"
    other = ok_json(
        "index", "search", gallery, files / "queries", "--top-k", "8", "--method", method
    )
    for a, b in zip(exact["results"], other["results"], strict=True):
        assert [m["index"] for m in a["matches"]] == [m["index"] for m in b["matches"]]


def test_export_torchscript(files, tmp_path):
    out = ok_json("export", files / "run", "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert Path(out["embedding_file"]).is_file() and Path(out["head_file"]).is_file()
    assert out["embedding_max_abs_diff"] <= 1e-5
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["embedding_file"] == "m.pt" and info["head_file"] == "m.head.pt"
    refused(
        siamnet("export", files / "run", "--format", "torchscript", "--out", tmp_path / "m.pt"),
        "already exists",
    )


@pytest.mark.skipif(not _importable("onnxruntime"), reason="onnxruntime not installed (onnx extra)")
def test_export_onnx(files, tmp_path):
    out = ok_json("export", files / "bce.pt", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert Path(out["embedding_file"]).is_file() and Path(out["head_file"]).is_file()
    assert out["score_max_abs_diff"] <= 1e-5


class WritesAMarker:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_bad_checkpoints_are_refused_without_running_code(files, tmp_path):
    q = files / "queries"
    empty, noise, evil = tmp_path / "empty.pt", tmp_path / "random.pt", tmp_path / "pickle.pt"
    empty.write_bytes(b"")
    noise.write_bytes(random.Random(7).randbytes(4096))
    marker = tmp_path / "MARKER"
    evil.write_bytes(pickle.dumps({"model": WritesAMarker(marker)}, protocol=2))
    refused(siamnet("compare", empty, q / "0-bar.png", q / "4-bar.png"), str(empty), "empty")
    refused(siamnet("compare", noise, q / "0-bar.png", q / "4-bar.png"), str(noise))
    refused(
        siamnet("index", "build", evil, "--data", files / "support", "--out", tmp_path / "g"),
        str(evil),
        "refused",
    )
    refused(
        siamnet("export", evil, "--format", "torchscript", "--out", tmp_path / "m.pt"), str(evil)
    )
    assert not marker.exists()
    assert not (tmp_path / "g").exists() and not (tmp_path / "m.pt").exists()
    refused(siamnet("compare", tmp_path, q / "0-bar.png", q / "4-bar.png"), "no best.pt")
