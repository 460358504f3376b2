"""Arguments refused in one line through the installed command, before any work and with
nothing written: unusable output paths, thresholds that are not finite numbers, an IVF search
visiting no cell, image sizes no checkpoint may have; and ``export`` writing exactly the name
given, never the checkpoint it exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_cases import changed, snapshot

from helpers import refused, siamnet
from shapes_model import shape_png, write_checkpoint, write_shape_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refusals")
    (root / "run").mkdir()
    write_checkpoint(root / "run" / "best.pt", "contrastive")
    write_shape_folder(root / "support", per_class=2, seed=501)
    shape_png(root / "q.png", "bar", seed=502)
    shape_png(root / "q2.png", "bar", seed=503)
    (root / "FILE").write_text("a file, not a folder\n")
    built = siamnet("index", "build", root / "run", "--data", root / "support", "--out", root / "g")
    assert built.returncode == 0, built.stderr
    return root


def refused_untouched(files: Path, *args: object, fragments: tuple[str, ...] = ()) -> str:
    """`args` are refused in one line naming `fragments`, and nothing under `files` changed."""
    before = snapshot(files)
    line = refused(siamnet(*args), *fragments)
    assert changed(before, snapshot(files)) == []
    return line


# --- output paths ----------------------------------------------------------------------------


def test_an_output_under_a_file_is_refused(files):
    out = files / "FILE"
    cases = [
        ("data", "show", "digits", "--out", out / "x.png"),
        ("plot", "roc", files / "run", "--out", out / "r.png"),
        ("export", files / "run", "--format", "torchscript", "--out", out / "m.onnx"),
        ("index", "build", files / "run", "--data", files / "support", "--out", out / "g"),
    ]
    lines = [
        refused_untouched(files, *args, fragments=("--out", "FILE is a file, not a folder"))
        for args in cases
    ]
    assert len(lines) == 4 and all(line.startswith("siamnet: error: ") for line in lines)
    assert out.read_text() == "a file, not a folder\n"


def test_a_gallery_where_nothing_can_be_made_or_over_a_file_is_refused(files):
    build = ("index", "build", files / "run", "--data", files / "support", "--out")
    proc = refused_untouched(files, *build, "/proc/g", fragments=("--out /proc/g",))
    assert "cannot write in /proc" in proc
    over = refused_untouched(files, *build, files / "FILE", fragments=("--out",))
    assert "is a file; expected a folder" in over and (files / "FILE").is_file()


# --- export writes the name given -----------------------------------------------------------


def test_export_writes_the_name_given_and_never_its_checkpoint(files, tmp_path):
    run = files / "run"
    checkpoint = (run / "best.pt").read_bytes()
    refused_untouched(
        files,
        *("export", run, "--format", "torchscript", "--out", run / "best.pt", "--overwrite"),
        fragments=("the checkpoint being exported",),
    )
    out = tmp_path / "best.ts.pt"
    result = siamnet("export", run, "--format", "torchscript", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["embedding_file"] == str(out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.ts.head.pt", "best.ts.json", "best.ts.pt"]
    assert (run / "best.pt").read_bytes() == checkpoint


def test_an_onnx_name_with_dots_is_kept(files, tmp_path):
    result = siamnet("export", files / "run", "--out", tmp_path / "m.v2.onnx")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.v2.head.onnx", "m.v2.json", "m.v2.onnx"]


# --- numbers ---------------------------------------------------------------------------------


def test_thresholds_that_are_not_finite_are_refused(files):
    q, q2 = files / "q.png", files / "q2.png"
    compare = ("compare", files / "run", q, q2)
    classify = ("classify", files / "run", "--support", files / "support", "--query", q)
    cases = [
        ("nan", "--threshold", compare),
        ("nan", "--threshold", ("index", "search", files / "g", q)),
        ("nan", "--reject-below", classify),
        ("nan", "--threshold", ("plot", "predictions", files / "run", "--out", files / "p.png")),
        ("inf", "--threshold", compare),
        ("-inf", "--reject-below", classify),
        ("nan", "--threshold", ("serve", files / "run", "--port", "0")),
    ]
    for value, flag, args in cases:
        line = refused_untouched(files, *args, f"{flag}={value}")
        assert f"{flag} {value}: expected a finite number" in line


def test_an_ivf_search_visiting_no_cell_and_a_top_k_of_zero_are_refused(files):
    search = ("index", "search", files / "g", files / "q.png")
    nprobe = refused_untouched(files, *search, "--method", "faiss-ivf", "--nprobe", "0")
    assert "--nprobe 0" in nprobe
    top_k = refused_untouched(files, *search, "--top-k", "0")
    assert "--top-k 0" in top_k


def test_image_sizes_larger_than_a_checkpoint_may_have_are_refused(files):
    for size in ("100000", "28x5000"):
        line = refused_untouched(files, "data", "info", "digits", "--image-size", size)
        assert f"--image-size {size}: each side must be at most 4096" in line
    shown = siamnet("data", "info", "digits", "--image-size", "4096x8", "--json")
    assert shown.returncode == 0, shown.stderr


# --- help ------------------------------------------------------------------------------------


def test_compare_help_shows_the_score_scale_and_no_threshold_off_it(files):
    text = " ".join(siamnet("compare", "--help").stdout.split())
    assert "--threshold 0.8" not in text
    assert "minus the embedding distance, 0 or below" in text
    answer = json.loads(
        siamnet("compare", files / "run", files / "q.png", files / "q2.png", "--json").stdout
    )
    assert answer["same"] is True and answer["score"] <= 0 and answer["threshold"] < 0
