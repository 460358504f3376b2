"""A whole checkpoint: default thresholds per head and objective, the evaluation report with both
protocols, calibration written into the checkpoint."""

from __future__ import annotations

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, save_checkpoint
from siamnet.data.labeled import LabeledImages
from siamnet.data.registry import Dataset, load_dataset
from siamnet.errors import ArgumentError
from siamnet.evaluate import (
    calibrate_checkpoint,
    default_threshold,
    evaluate_checkpoint,
    format_calibration,
    format_evaluation,
)
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.objectives import get_objective

from helpers import DIGITS_UNSEEN, digits_metadata


def test_default_thresholds_per_head_or_as_training_recorded_them():
    assert default_threshold({"model_spec": {"head": "l1"}})[0] == 0.5
    assert default_threshold({"model_spec": {"head": "cosine"}})[0] == 0.0
    # a contrastive-trained distance: the objective's rule, recorded in the checkpoint at
    # training (`rundir.metadata_for`), read here without consulting any objective
    objective = get_objective("contrastive")
    recorded = list(objective.default_threshold(2.0))
    value, words = default_threshold(
        {"model_spec": {"head": "euclidean", "loss": "contrastive"}, "default_threshold": recorded}
    )
    assert value == -1.0 and "distance 1" in words
    # triplet and proto set no scale for the distance: no default, only a calibrated threshold
    for loss in ("triplet", "proto"):
        assert get_objective(loss).default_threshold(0.2) is None
        meta = {"model_spec": {"head": "euclidean", "loss": loss}, "default_threshold": None}
        assert default_threshold(meta) is None


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory):
    """An untrained conv4 checkpoint that records digits 0-5 as its training classes."""
    path = tmp_path_factory.mktemp("eval") / "model.pt"
    torch.manual_seed(0)
    spec = ModelSpec(model="conv4", loss="contrastive", embedding_norm=True)
    meta = digits_metadata(["0", "1", "2", "3", "4", "5"], eval_classes=DIGITS_UNSEEN)
    meta.update(model_spec=spec.to_dict(), unseen_classes=DIGITS_UNSEEN)
    save_checkpoint(path, build_model(spec), meta)
    return path


def test_evaluate_checkpoint_reports_everything(untrained_checkpoint):
    ckpt = load_checkpoint(untrained_checkpoint)
    ev = evaluate_checkpoint(ckpt, load_dataset("digits"), pairs=2000, episodes=200)
    report = ev.report
    assert report["evaluation_data"]["classes"] == DIGITS_UNSEEN
    ver = report["verification"]
    assert ver["pairs"] == 2000 and ver["positives"] == 1000 and 0 <= ver["roc_auc"] <= 1
    assert [t["name"] for t in ver["thresholds"]] == ["default", "calibrated"]
    rows = [(r["ways"], r["shots"], r["scoring"]) for r in report["one_shot"]]
    assert rows == [(4, 1, "mean"), (4, 5, "mean"), (4, 5, "prototype")]
    assert all(r["protocol"] == "unstructured" and r["episodes"] == 200 for r in report["one_shot"])
    assert len(ev.scores) == 2000 and ev.embeddings.shape[0] == len(ev.data.data)
    text = format_evaluation(report)
    assert "ROC AUC" in text and "prototype" in text and "capped at 4" in text


def test_both_protocols_when_classes_have_groups(untrained_checkpoint):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=g)
    data = LabeledImages(images, labels, [f"a{i}" for i in range(8)], groups=["A"] * 5 + ["B"] * 3)
    ckpt = load_checkpoint(untrained_checkpoint)
    ev = evaluate_checkpoint(
        ckpt, Dataset("letters", {"train": data}), pairs=100, ways=[5], shots=[1], episodes=50
    )
    rows = [(r["protocol"], r["ways"]) for r in ev.report["one_shot"]]
    assert rows == [("unstructured", 5), ("within-group", 5)]


def test_calibrate_reaches_the_target_and_writes_the_checkpoint(untrained_checkpoint, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(untrained_checkpoint.read_bytes())
    ckpt = load_checkpoint(path)
    result = calibrate_checkpoint(ckpt, load_dataset("digits"), target_far=0.05, pairs=2000)
    assert result["old_threshold"] == -0.5 and result["far"] <= 0.05
    assert "validation split" in result["data"]
    stored = load_checkpoint(path)
    assert stored.threshold == pytest.approx(result["threshold"])
    assert stored.metadata["calibration"]["target_far"] == 0.05
    assert "0.05" in stored.metadata["threshold_source"]
    assert "new threshold" in format_calibration(result)
    with pytest.raises(ArgumentError, match="exactly one"):
        calibrate_checkpoint(ckpt, load_dataset("digits"))
    with pytest.raises(ArgumentError, match="target-far"):
        calibrate_checkpoint(ckpt, load_dataset("digits"), target_far=1.5)
