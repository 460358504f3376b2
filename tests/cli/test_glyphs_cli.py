"""The built-in ``glyphs`` set through the installed command: rendered on first use into the
data cache, read back from it, trained on (background alphabets) and evaluated on alphabets
never seen in training (the demo's path), and a missing font refused in one line."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from siamnet.data.sources import glyphs

from helpers import refused, siamnet


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data cache holding the rendered set (rendered by the first ``data info``)."""
    root = tmp_path_factory.mktemp("data")
    result = siamnet("data", "info", "glyphs", env={"SIAMNET_DATA": str(root)})
    assert result.returncode == 0, result.stderr
    return root


def test_data_info_renders_once_into_the_cache(data_root):
    (archive,) = (data_root / "glyphs").glob("glyphs-*.npz")
    sums = archive.with_name(archive.name + ".sha256")
    assert sums.read_text().split()[0] == hashlib.sha256(archive.read_bytes()).hexdigest()
    stamp = archive.stat().st_mtime_ns
    result = siamnet("data", "info", "glyphs", env={"SIAMNET_DATA": str(data_root)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "background: training (the background alphabets)" in out
    assert "evaluation: testing (the evaluation alphabets, never seen in training)" in out
    assert "per class  min 20, median 20, max 20" in out and "28x28, 1 channel" in out
    assert archive.stat().st_mtime_ns == stamp  # read from the cache, not rendered again


def test_missing_font_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "fonts"
    folder.mkdir()
    for name, path in glyphs.font_paths(glyphs.font_dir()).items():
        if name != "DejaVuSerif-Italic.ttf":
            os.symlink(path, folder / name)
    env = {"SIAMNET_DATA": str(tmp_path / "data"), glyphs.FONTS_ENV: str(folder)}
    result = siamnet("data", "info", "glyphs", env=env)
    refused(result, "glyphs: font DejaVuSerif-Italic.ttf not found in", str(folder))
    result = siamnet("train", "--data", "glyphs", "--out", tmp_path / "run", env=env)
    refused(result, "DejaVuSerif-Italic.ttf")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_train_on_background_evaluate_on_unseen_alphabets(data_root, tmp_path):
    env = {"SIAMNET_DATA": str(data_root)}
    run = tmp_path / "run"
    result = siamnet(
        "train", "--data", "glyphs", "--epochs", "1", "--steps-per-epoch", "3", "--ways", "10",
        "--out", run, "--quiet", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = siamnet(
        "evaluate", run, "--ways", "20", "--shots", "1", "--episodes", "50", "--json", "-",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    chosen = report["evaluation_data"]
    assert chosen["unseen_classes"] is True
    evaluation = {a.name for a in glyphs.ALPHABETS if a.split == "evaluation"}
    assert {c.split("/")[0] for c in chosen["classes"]} == evaluation
    rows = {(r["protocol"], r["ways"], r["shots"]) for r in report["one_shot"]}
    assert rows == {("unstructured", 20, 1), ("within-group", 20, 1)}
