"""A prototypical-network checkpoint end to end through the installed command: `siamnet train
--loss proto` on a small folder of drawn shapes, then `evaluate`, `compare` and `classify` on
it. Scores of a proto checkpoint are minus a Euclidean distance, as for contrastive ones."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from siamnet.checkpoint import load_checkpoint
from siamnet.images import read_image

from helpers import ENV, SIAMNET
from shapes_model import SHAPES, shape_png, write_shape_folder

pytestmark = pytest.mark.slow


def truth(path: str) -> str:
    return Path(path).stem.split("-", 1)[1]


@pytest.fixture(scope="module")
def proto(tmp_path_factory) -> dict:
    """Train a conv4 proto model for 5 episodes on the 4 shapes (not rotated: a rotated cross,
    ring or box is the same picture), then run every verb on it at once (most of each run is
    starting Python and torch)."""
    root = tmp_path_factory.mktemp("proto-cli")
    data = write_shape_folder(root / "shapes", per_class=12, seed=7)
    support = write_shape_folder(root / "support", per_class=1, seed=201)
    queries = root / "queries"
    queries.mkdir()
    for i, shape in enumerate(SHAPES * 2):
        shape_png(queries / f"{i}-{shape}.png", shape, seed=300 + i)
    run = root / "run"
    train = subprocess.run(
        [SIAMNET, "train", "--data", data, "--loss", "proto", "--model", "conv4", "--ways", "3",
         "--shots", "1", "--queries", "2", "--epochs", "1", "--steps-per-epoch", "5",
         "--no-rotate-classes", "--out", run, "--quiet", "--device", "cpu", "--json"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    verbs = {
        "evaluate": ["evaluate", run, "--data", data, "--json", "-"],
        "same": ["compare", run, queries / "0-bar.png", queries / "4-bar.png", "--json"],
        "different": ["compare", run, queries / "0-bar.png", queries / "2-ring.png", "--json"],
        "classify": ["classify", run, "--support", support, "--query", queries, "--json"],
    }
    running = {
        name: subprocess.Popen([SIAMNET, *map(str, argv)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
        for name, argv in verbs.items()
    }  # fmt: skip
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stdout, stderr)
    return {"run": run, "data": data, "queries": queries, "train": train, "results": results}


def output(proto: dict, verb: str) -> dict:
    status, stdout, stderr = proto["results"][verb]
    assert status == 0, stderr
    assert "Traceback" not in stderr
    return json.loads(stdout)


def test_train_writes_a_proto_checkpoint(proto):
    run = proto["run"]
    summary = json.loads(proto["train"].stdout)
    assert summary["epochs_run"] == 1
    assert summary["images_seen"] == 5 * 3 * (1 + 2)  # 5 episodes of 3 ways × (1 shot + 2 queries)
    assert summary["threshold"] < 0  # minus a distance
    for name in ("best.pt", "last.pt", "metrics.csv", "summary.json"):
        assert (run / name).is_file(), name
    header, row = (run / "metrics.csv").read_text().strip().splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert math.isfinite(float(values["train_loss"])) and float(values["train_loss"]) > 0
    ckpt = load_checkpoint(run)
    spec = ckpt.spec
    assert (spec.model, spec.loss, spec.head) == ("conv4", "proto", "euclidean")
    assert spec.learned_temperature is True and ckpt.model.log_temperature is not None
    assert ckpt.metadata["classes"] == sorted(SHAPES)
    args = ckpt.metadata["training_args"]
    assert (args["ways"], args["shots"], args["queries"]) == (3, 1, 2)
    assert ckpt.threshold == pytest.approx(summary["threshold"])


def test_evaluate_reports_distance_scores(proto):
    report = output(proto, "evaluate")
    assert report["model"]["loss"] == "proto" and report["model"]["head"] == "euclidean"
    assert "minus the Euclidean distance" in report["model"]["score"]
    assert report["evaluation_data"]["classes"] == sorted(SHAPES)
    assert report["evaluation_data"]["unseen_classes"] is False
    ver = report["verification"]
    assert ver["pairs"] > 0 and 0 < ver["positives"] < ver["pairs"]
    assert 0.5 < ver["roc_auc"] <= 1 and 0 <= ver["eer"] < 0.5
    calibrated = [t for t in ver["thresholds"] if t["name"] == "calibrated"]
    assert len(calibrated) == 1 and calibrated[0]["threshold"] < 0
    assert calibrated[0]["threshold"] == pytest.approx(load_checkpoint(proto["run"]).threshold)
    for t in ver["thresholds"]:
        assert all(0 <= t[k] <= 1 for k in ("accuracy", "precision", "recall", "far", "frr"))
    rows = report["one_shot"]
    assert rows
    for r in rows:
        assert 2 <= r["ways"] <= len(SHAPES) and r["shots"] >= 1
        assert 1 / r["ways"] < r["accuracy"] <= 1  # better than chance


def test_compare_gives_minus_the_distance_between_embeddings(proto):
    same, different = output(proto, "same"), output(proto, "different")
    threshold = load_checkpoint(proto["run"]).threshold
    for result in (same, different):
        assert result["head"] == "euclidean"
        assert result["score"] < 0 and result["distance"] == pytest.approx(-result["score"])
        assert result["threshold"] == pytest.approx(threshold)
        assert result["same"] is (result["score"] >= result["threshold"])
    assert same["score"] > different["score"]  # two bars are closer than a bar and a ring
    # the same number through the Python API
    model = load_checkpoint(proto["run"]).model
    q = proto["queries"]
    a, b = (read_image(q / name, 1, (28, 28))[None] for name in ("0-bar.png", "4-bar.png"))
    with torch.no_grad():
        distance = torch.linalg.vector_norm(model.embed(a) - model.embed(b)).item()
    assert same["distance"] == pytest.approx(distance, rel=1e-4)


def test_classify_against_a_support_folder(proto):
    out = output(proto, "classify")
    assert out["support"]["classes"] == sorted(SHAPES) and out["support"]["images"] == 4
    predictions = out["predictions"]
    assert len(predictions) == 8 and out["skipped"] == []
    for p in predictions:
        assert p["label"] == p["best"] in SHAPES and p["runner_up"] != p["best"]
        assert p["runner_up_score"] <= p["score"] <= 0
        assert p["unknown"] is False
    right = sum(p["label"] == truth(p["file"]) for p in predictions)
    assert right >= 5, predictions  # chance is 2 of 8
