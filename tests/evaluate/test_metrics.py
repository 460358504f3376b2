"""Pair metrics against scikit-learn (also the training loop's own), thresholds for the best
accuracy and for a false-accept rate, JSON-ready reports."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from sklearn import metrics as skm

from siamnet.evaluate import (
    best_accuracy_threshold,
    equal_error_rate,
    json_ready,
    pair_accuracy,
    pair_metrics,
    rank_auc,
    threshold_for_far,
)


def test_pair_metrics_agree_with_scikit_learn():
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(500, generator=g) < 0.45).float()
    scores = torch.randn(500, generator=g) + 1.3 * targets
    t = 0.4
    m = pair_metrics(scores, targets, t)
    y, s = targets.numpy().astype(bool), scores.numpy()
    predicted = s >= t
    assert m.roc_auc == pytest.approx(skm.roc_auc_score(y, s))
    assert m.precision == pytest.approx(skm.precision_score(y, predicted))
    assert m.recall == pytest.approx(skm.recall_score(y, predicted))
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, predicted))
    assert m.far == pytest.approx((predicted & ~y).sum() / (~y).sum())
    assert m.frr == pytest.approx((~predicted & y).sum() / y.sum())
    assert m.recall == pytest.approx(1 - m.frr)
    # equal error rate: where FAR and FRR cross, by brute force over every threshold
    rates = [((s[~y] >= c).mean(), (s[y] < c).mean()) for c in sorted(s)]
    far, frr = min(rates, key=lambda r: abs(r[0] - r[1]))
    assert equal_error_rate(scores, targets) == pytest.approx((far + frr) / 2, abs=0.01)


@pytest.mark.parametrize("levels", [None, 7, 2])  # continuous scores, heavy ties, two values
def test_training_loop_metrics_equal_scikit_learn(levels):
    g = torch.Generator().manual_seed(1)
    targets = (torch.rand(700, generator=g) < 0.4).float()
    scores = torch.randn(700, generator=g) + targets
    if levels:
        scores = torch.round(scores * levels / 4)
    y, s = targets.numpy().astype(bool), scores.numpy()
    assert rank_auc(scores, targets) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert pair_accuracy(scores, targets, 0.3) == pytest.approx(skm.accuracy_score(y, s >= 0.3))
    assert math.isnan(rank_auc(scores, torch.ones(700)))


def test_a_training_process_does_not_import_scikit_learn():
    """scikit-learn costs about 100 MB and a second of start-up; training does not need it."""
    code = "import sys, siamnet.train, siamnet.cli; print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_thresholds_for_best_accuracy_and_for_a_false_accept_rate():
    g = torch.Generator().manual_seed(1)
    targets = torch.cat([torch.zeros(300), torch.ones(300)])
    scores = torch.randn(600, generator=g) + 1.5 * targets
    best = best_accuracy_threshold(scores, targets)
    brute = max(pair_metrics(scores, targets, float(c)).accuracy for c in scores)
    assert pair_metrics(scores, targets, best).accuracy == pytest.approx(brute)
    for target_far in (0.0, 0.01, 0.05, 0.2):
        t = threshold_for_far(scores, targets, target_far)
        assert pair_metrics(scores, targets, t).far <= target_far
        lower = scores[(targets < 0.5) & (scores < t)].max()  # the next negative down
        assert pair_metrics(scores, targets, float(lower)).far > target_far


def test_threshold_for_far_with_tied_scores():
    targets = torch.cat([torch.zeros(100), torch.ones(100)])
    negatives = torch.arange(100).div(10, rounding_mode="floor").double()  # 10 ties per value
    scores = torch.cat([negatives, torch.full((100,), 9.5)])
    for target_far in (0.01, 0.05, 0.1, 0.15, 0.5):
        t = threshold_for_far(scores, targets, target_far)
        far = pair_metrics(scores, targets, t).far
        assert far <= target_far and far == pytest.approx(math.floor(target_far * 10) / 10)


def test_json_ready_replaces_nan():
    assert json_ready({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {
        "a": [1.0, None],
        "b": None,
        "c": "x",
    }


def test_verification_report_without_a_known_threshold():
    # a distance head has no default threshold, and evaluate --centring other than the
    # checkpoint's leaves its calibrated one out: the threshold-free figures remain
    from siamnet.cli.report_text import _text_table
    from siamnet.evaluate.metrics import verification_report

    scores = torch.tensor([0.9, 0.8, 0.3, 0.1])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    report = verification_report(scores, targets, {})
    assert report["thresholds"] == [] and report["roc_auc"] == 1.0 and report["eer"] == 0.0
    assert (report["pairs"], report["positives"]) == (4, 2)
    assert len(_text_table(["a", "bb"], [])) == 2  # header and rule, no rows
