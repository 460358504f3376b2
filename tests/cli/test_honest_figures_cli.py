"""One figure per model and task, and thresholds that say where they come from: training's
summary and `siamnet evaluate` report the same one-shot accuracy; on data with fewer than 20
classes the threshold is said to be tuned on seen classes, next to its FAR/FRR on unseen ones;
a file given to `evaluate` is evaluated whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from siamnet.data.registry import load_dataset

from helpers import siamnet

pytestmark = pytest.mark.slow


def ok(*args: object):
    result = siamnet(*args)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """The demo's data (digits, 6-9 held out) and a short run; its printed summary."""
    run = tmp_path_factory.mktemp("honest") / "run"
    result = ok(
        "train",
        *("--model", "seed-cnn", "--loss", "contrastive", "--epochs", "1"),
        *("--steps-per-epoch", "10", "--quiet", "--out", run),
    )
    return run, result.stdout


def test_training_and_evaluate_report_the_same_one_shot_figure(trained, tmp_path):
    run, _ = trained
    summary = json.loads((run / "summary.json").read_text())
    ok("evaluate", run, "--quiet", "--json", tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    trained_on = summary["oneshot"]
    rows = [
        r
        for r in report["one_shot"]
        if r["ways"] == trained_on["ways"] and r["shots"] == 1 and r["protocol"] == "unstructured"
    ]
    assert rows and rows[0]["accuracy"] == trained_on["accuracy"]
    assert rows[0]["ci95"] == trained_on["ci95"]


def test_a_threshold_tuned_on_seen_classes_is_said_so_with_its_rates_on_unseen_ones(
    trained, tmp_path
):
    run, printed = trained
    summary = json.loads((run / "summary.json").read_text())
    assert "training classes" in summary["threshold_tuned_on"]
    assert 0.0 <= summary["unseen_far"] <= 1.0 and 0.0 <= summary["unseen_frr"] <= 1.0
    assert "note: the threshold was tuned on classes seen in training" in printed
    assert "false accepts" in printed
    ok("evaluate", run, "--quiet", "--json", tmp_path / "report.json")
    notes = json.loads((tmp_path / "report.json").read_text())["evaluation_data"]["notes"]
    assert any("tuned on classes seen in training" in n for n in notes)
    assert "tuned on classes seen in training" in " ".join(ok("compare", "--help").stdout.split())


def test_a_file_given_to_evaluate_is_evaluated_whole(trained, tmp_path):
    run, _ = trained
    test = load_dataset("digits").test
    rows = np.concatenate(
        [test.labels.numpy()[:, None], test.images.flatten(1).numpy().astype(np.int64)], axis=1
    )
    csv = tmp_path / "test.csv"
    np.savetxt(csv, rows, fmt="%d", delimiter=",")
    ok(
        "evaluate",
        *(run, "--data", csv, "--ways", "10", "5", "--quiet", "--json", tmp_path / "r.json"),
    )
    data = json.loads((tmp_path / "r.json").read_text())["evaluation_data"]
    assert data["images"] == len(test)
    assert "4 classes never seen in training and 6 seen" in data["description"]
