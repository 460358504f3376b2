"""Evaluation: the batched N-way evaluator against a slow, obviously correct reference; pair
metrics against scikit-learn; chance and perfect models; choosing evaluation and calibration
data; a whole checkpoint evaluation and calibration."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from siamnet.checkpoint import load_checkpoint, save_checkpoint
from siamnet.data.episodes import episodes_for_evaluation
from siamnet.data.labeled import LabeledImages
from siamnet.data.registry import Dataset, load_dataset
from siamnet.errors import ArgumentError, DataError
from siamnet.evaluate import (
    best_accuracy_threshold,
    calibrate_checkpoint,
    capped_ways,
    default_threshold,
    embed_images,
    embedding_batch_size,
    episode_predictions,
    equal_error_rate,
    evaluate_checkpoint,
    evaluation_data,
    few_shot_accuracy,
    format_calibration,
    format_evaluation,
    json_ready,
    merge_splits,
    pair_accuracy,
    pair_metrics,
    rank_auc,
    threshold_for_far,
    validation_data,
)
from siamnet.models.heads import build_head
from siamnet.models.siamese import ModelSpec, SiameseNet, build_model
from siamnet.train import TrainConfig, prepare_data

DIGITS_UNSEEN = ["6", "7", "8", "9"]


def head_model(kind: str, dim: int = 6, seed: int = 0) -> SiameseNet:
    """A model whose embeddings are given directly (only its head matters), in float64."""
    torch.manual_seed(seed)
    model = SiameseNet(nn.Identity(), build_head(kind, dim))
    return model.double().eval()


@torch.no_grad()
def reference_predictions(model, emb, ep, ways, scoring):
    """Predicted class of every query, one pair at a time with the head's own forward."""
    head = model.head
    out = torch.empty_like(ep.query)
    for e in range(ep.query.shape[0]):
        for j in range(ep.query.shape[1]):
            q = emb[ep.query[e, j]][None]
            best, best_score = -1, -math.inf
            for c in range(ways):
                members = [
                    int(s)
                    for s, y in zip(ep.support[e], ep.support_labels[e], strict=True)
                    if int(y) == c
                ]
                if scoring == "mean":
                    scores = [float(head.to_score(head(q, emb[s][None]))[0]) for s in members]
                    score = sum(scores) / len(scores)
                else:
                    prototype = emb[members].mean(0, keepdim=True)
                    score = float(head.to_score(head(q, prototype))[0])
                if score > best_score:
                    best, best_score = c, score
            out[e, j] = best
    return out


def tiny_data(classes: int = 7, per_class: int = 6, dim: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    emb = centres[labels] + 1.2 * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return emb, labels


@pytest.mark.parametrize("kind", ["l1", "euclidean", "cosine"])
@pytest.mark.parametrize("scoring", ["mean", "prototype"])
@pytest.mark.parametrize("shots", [1, 3])
def test_batched_evaluator_matches_the_reference(kind, scoring, shots):
    emb, labels = tiny_data()
    model = head_model(kind)
    ways, queries, episodes = 4, 2, 25
    ep = episodes_for_evaluation(labels, ways, shots, queries, episodes, seed=3)
    fast = episode_predictions(model, emb, ep, ways, scoring)
    slow = reference_predictions(model, emb, ep, ways, scoring)
    assert torch.equal(fast, slow)
    result = few_shot_accuracy(
        model,
        emb,
        labels,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        seed=3,
        scoring=scoring,
    )
    expected = (slow == ep.query_labels).double().mean(1).mean()
    assert result.accuracy == pytest.approx(float(expected))
    assert (result.ways, result.shots, result.episodes, result.scoring) == (
        ways,
        shots,
        episodes,
        scoring,
    )
    assert 0.3 < result.accuracy < 1.0  # informative embeddings, neither chance nor perfect


def test_within_group_episodes_stay_in_one_group_and_match_the_reference():
    emb, labels = tiny_data(classes=8)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    model = head_model("euclidean")
    ep = episodes_for_evaluation(labels, 3, 1, 1, 30, seed=5, groups=groups)
    assert all(len(set(groups[row].tolist())) == 1 for row in ep.classes)
    fast = episode_predictions(model, emb, ep, 3)
    assert torch.equal(fast, reference_predictions(model, emb, ep, 3, "mean"))
    result = few_shot_accuracy(model, emb, labels, ways=3, episodes=30, seed=5, groups=groups)
    assert result.protocol == "within-group"


def test_random_scores_give_chance_and_an_oracle_gives_everything():
    g = torch.Generator().manual_seed(11)
    labels = torch.arange(20).repeat_interleave(10)
    noise = torch.randn(len(labels), 16, generator=g)
    for ways in (5, 10):
        chance = few_shot_accuracy(
            head_model("euclidean", 16).float(), noise, labels, ways=ways, episodes=1000, seed=2
        )
        assert abs(chance.accuracy - 1 / ways) <= chance.ci95
        assert 0 < chance.ci95 < 0.05
    oracle = nn.functional.one_hot(labels, 20).float() * 5
    for kind in ("euclidean", "cosine"):
        for shots, scoring in ((1, "mean"), (5, "mean"), (5, "prototype")):
            perfect = few_shot_accuracy(
                head_model(kind, 20).float(),
                oracle,
                labels,
                ways=20,
                shots=shots,
                episodes=1000,
                seed=1,
                scoring=scoring,
            )
            assert perfect.accuracy == 1.0


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


def test_embedding_batch_size_by_image_size_and_device():
    assert embedding_batch_size((28, 28), "cpu") == 128
    assert embedding_batch_size((105, 105), "cpu") == 8
    assert embedding_batch_size((4, 4), "cpu") == 512
    assert embedding_batch_size((1000, 1000), "cpu") == 1
    assert embedding_batch_size((105, 105), "cuda") == 512


def test_embeddings_do_not_depend_on_the_batch_size():
    model = build_model(ModelSpec(model="conv4", image_size=(28, 28))).eval()
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    auto = embed_images(model, images)
    assert auto.shape == (300, model.backbone.out_dim)
    assert torch.allclose(auto, embed_images(model, images, batch_size=7), atol=1e-5)
    with pytest.raises(ArgumentError, match="--batch-size 0"):
        embed_images(model, images, batch_size=0)


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


def test_ways_are_capped_and_deduplicated():
    labels = torch.arange(4).repeat_interleave(3)
    assert capped_ways(labels, [5, 10, 20], need=2) == [4]
    assert capped_ways(labels, [2, 3, 5], need=2) == [2, 3, 4]
    assert capped_ways(labels, [5], need=4) == []  # no class has 4 examples
    groups = torch.tensor([0, 0, 0, 1])
    assert capped_ways(labels, [5, 2], need=2, groups=groups) == [3, 2]


def digits_metadata(classes: list[str], **args) -> dict:
    spec = ModelSpec(model="conv4", loss="contrastive")
    return {
        "model_spec": spec.to_dict(),
        "classes": classes,
        "threshold": -0.5,
        "threshold_source": "default",
        "unseen_classes": [],
        "training_args": {"data": "digits", "seed": 0, "margin": 1.0, **args},
    }


def test_evaluation_data_prefers_unseen_classes_then_the_test_split():
    dataset = load_dataset("digits")
    meta = digits_metadata(["0", "1", "2", "3", "4", "5"], eval_classes=DIGITS_UNSEEN)
    chosen = evaluation_data(dataset, meta)
    everything = merge_splits(dataset)
    assert chosen.unseen and chosen.data.classes == DIGITS_UNSEEN
    assert len(chosen.data) == int(torch.isin(everything.labels, torch.tensor([6, 7, 8, 9])).sum())
    seen = evaluation_data(dataset, digits_metadata([str(i) for i in range(10)]))
    assert not seen.unseen and "'test' split" in seen.description
    assert len(seen.data) == len(dataset.test)
    given = evaluation_data(dataset, meta, ["1", "8"])
    assert given.data.classes == ["1", "8"] and not given.unseen and given.notes
    with pytest.raises(DataError, match="'x'"):
        evaluation_data(dataset, meta, ["6", "x"])


def test_validation_data_is_the_split_training_held_out():
    cfg = TrainConfig(data="digits", eval_classes=DIGITS_UNSEEN, seed=3)
    trained = prepare_data(cfg)
    meta = digits_metadata(trained.train.classes, **cfg.to_json())
    val = validation_data(load_dataset("digits"), meta)
    assert val is not None and torch.equal(val.data.images, trained.val.images)
    assert torch.equal(val.data.labels, trained.val.labels)
    # data the checkpoint was not trained on gives no validation split
    other = digits_metadata(["a", "b"], seed=3)
    assert validation_data(load_dataset("digits"), other) is None


def test_default_thresholds_per_head():
    assert default_threshold({"model_spec": {"head": "l1"}})[0] == 0.5
    assert default_threshold({"model_spec": {"head": "cosine"}})[0] == 0.0
    value, words = default_threshold(
        {
            "model_spec": {"head": "euclidean", "loss": "contrastive"},
            "training_args": {"margin": 2.0},
        }
    )
    assert value == -1.0 and "distance 1" in words
    # triplet and proto set no scale for the distance: no default, only a calibrated threshold
    for loss in ("triplet", "proto"):
        assert default_threshold({"model_spec": {"head": "euclidean", "loss": loss}}) is None


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


def test_json_ready_replaces_nan():
    assert json_ready({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {
        "a": [1.0, None],
        "b": None,
        "c": "x",
    }
