"""Comparing two images and classifying queries against a K-shot support set."""

from __future__ import annotations

import copy

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, save_checkpoint
from siamnet.errors import ArgumentError, CheckpointError, DataError
from siamnet.evaluate import embed_images, embedding_batch_size
from siamnet.infer import (
    SupportSet,
    build_support,
    class_scores,
    classify,
    compare,
    finite_number,
)

from shapes_model import SHAPES, draw_shapes, shape_set, write_checkpoint


@pytest.fixture(scope="session", params=["contrastive", "bce"])
def ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"ckpt-{request.param}") / "shapes.pt"
    return load_checkpoint(write_checkpoint(path, request.param))


@pytest.fixture(scope="session")
def euclidean_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt-euclidean") / "shapes.pt"
    return load_checkpoint(write_checkpoint(path, "contrastive"))


def one(shape: str, seed: int) -> torch.Tensor:
    return draw_shapes(torch.tensor([SHAPES.index(shape)]), seed)[0]


def test_compare_same_and_different_shapes(ckpt):
    same = [compare(ckpt, one(s, 1), one(s, 2)) for s in SHAPES]
    pairs = [("bar", "cross"), ("cross", "ring"), ("ring", "box"), ("box", "bar")]
    different = [compare(ckpt, one(a, 3), one(b, 4)) for a, b in pairs]
    assert all(r.same for r in same)
    assert not any(r.same for r in different)
    assert min(r.score for r in same) > max(r.score for r in different)
    assert all(r.threshold == ckpt.threshold for r in same + different)


def test_compare_scores_and_distances_by_head(ckpt):
    r = compare(ckpt, one("bar", 1), one("ring", 2))
    if ckpt.spec.head == "l1":
        assert 0.0 < r.score < 1.0 and r.distance is None
    else:
        assert r.score <= 0.0 and r.distance == pytest.approx(-r.score)


def test_compare_threshold_override_and_batch_of_one(euclidean_ckpt):
    a, b = one("cross", 5), one("cross", 6)
    assert compare(euclidean_ckpt, a, b).same
    strict = compare(euclidean_ckpt, a[None], b[None], threshold=0.5)  # above any -distance
    assert not strict.same and strict.threshold == 0.5
    with pytest.raises(ArgumentError, match="expected shape"):
        compare(euclidean_ckpt, torch.cat([a[None], a[None]]), b)


def test_compare_without_a_calibrated_threshold(euclidean_ckpt, tmp_path):
    meta = {k: v for k, v in euclidean_ckpt.metadata.items() if k != "threshold"}
    save_checkpoint(tmp_path / "raw.pt", euclidean_ckpt.model, meta)
    bare = load_checkpoint(tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="pass --threshold"):
        compare(bare, one("bar", 1), one("bar", 2))
    assert compare(bare, one("bar", 1), one("bar", 2), threshold=-0.5).same


@pytest.mark.parametrize("shots", [1, 3])
@pytest.mark.parametrize("scoring", ["mean", "prototype"])
def test_classify_k_shot(ckpt, shots, scoring):
    support_images, support_labels = shape_set(shots, seed=11)
    support = build_support(ckpt, support_images, support_labels, list(SHAPES))
    queries, truth = shape_set(10, seed=12)
    predictions = classify(ckpt, support, queries, scoring=scoring)
    assert len(predictions) == len(queries)
    right = [p.label == SHAPES[t] for p, t in zip(predictions, truth.tolist(), strict=True)]
    accuracy = sum(right) / len(truth)
    assert accuracy >= 0.9
    for p in predictions:
        assert not p.unknown and p.best == p.label
        assert p.runner_up in SHAPES and p.runner_up != p.label
        assert p.score >= p.runner_up_score


def test_class_scores_equal_the_mean_of_pair_scores(ckpt):
    """Batched class scores against a pair-by-pair loop through the head."""
    model = ckpt.model
    support_images, support_labels = shape_set(3, seed=21)
    support = build_support(ckpt, support_images, support_labels, list(SHAPES))
    queries = embed_images(model, shape_set(2, seed=22)[0])
    got = class_scores(model, support, queries, "mean")
    want = torch.zeros(len(queries), len(SHAPES))
    for qi, q in enumerate(queries):
        for k in range(len(SHAPES)):
            rows = support.embeddings[support.labels == k]
            pair = model.head.to_score(model.head(q.expand(len(rows), -1), rows))
            want[qi, k] = pair.mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_embeddings_as_queries_give_the_same_answer(euclidean_ckpt):
    support = build_support(euclidean_ckpt, *shape_set(1, seed=31), list(SHAPES))
    images = shape_set(3, seed=32)[0]
    by_image = classify(euclidean_ckpt, support, images)
    by_embedding = classify(euclidean_ckpt, support, embed_images(euclidean_ckpt.model, images))
    assert [p.label for p in by_image] == [p.label for p in by_embedding]
    assert [p.score for p in by_image] == pytest.approx([p.score for p in by_embedding])


def test_reject_below_answers_unknown_for_an_unseen_shape(euclidean_ckpt):
    """Support holds bars and crosses only; rings are unknown at the calibrated threshold."""
    images, labels = shape_set(2, seed=41)
    keep = labels < 2
    support = build_support(euclidean_ckpt, images[keep], labels[keep], ["bar", "cross"])
    rings = draw_shapes(torch.full((5,), SHAPES.index("ring")), seed=42)
    bars = draw_shapes(torch.full((5,), SHAPES.index("bar")), seed=43)
    t = euclidean_ckpt.threshold
    unknown = classify(euclidean_ckpt, support, rings, reject_below=t)
    known = classify(euclidean_ckpt, support, bars, reject_below=t)
    assert all(p.unknown and p.label is None and p.best in ("bar", "cross") for p in unknown)
    assert all(not p.unknown and p.label == "bar" for p in known)
    assert all(p.score < t for p in unknown)


def test_one_class_support_has_no_runner_up(euclidean_ckpt):
    images, labels = shape_set(2, seed=51)
    keep = labels == 0
    support = build_support(euclidean_ckpt, images[keep], labels[keep], ["bar"])
    (p,) = classify(euclidean_ckpt, support, images[:1])
    assert p.label == "bar" and p.runner_up is None and p.runner_up_score is None


def test_a_class_without_support_images_never_wins(euclidean_ckpt):
    images, labels = shape_set(1, seed=61)
    support = build_support(euclidean_ckpt, images, labels, [*SHAPES, "nothing"])
    scores = class_scores(euclidean_ckpt.model, support, support.embeddings)
    assert bool(torch.isinf(scores[:, -1]).all())
    assert {p.label for p in classify(euclidean_ckpt, support, images)} <= set(SHAPES)


def test_support_set_validation():
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        SupportSet(torch.zeros(3, 4), torch.tensor([0, 1, 2]), ["a", "b"])
    with pytest.raises(DataError, match="do not match"):
        SupportSet(torch.zeros(3, 4), torch.tensor([0, 1]), ["a", "b"])


def test_unknown_scoring_is_refused(euclidean_ckpt):
    support = build_support(euclidean_ckpt, *shape_set(1, seed=71), list(SHAPES))
    with pytest.raises(ArgumentError, match="scoring"):
        classify(euclidean_ckpt, support, shape_set(1, seed=72)[0], scoring="vote")


def test_thousand_queries_against_thousand_classes_embed_each_image_once(euclidean_ckpt):
    """1,000 queries against a 1,000-class one-shot support set: 2,000 images embedded."""
    model = copy.deepcopy(euclidean_ckpt.model)
    seen = {"images": 0, "calls": 0}
    original = model.embed

    def counting_embed(x: torch.Tensor) -> torch.Tensor:
        seen["images"] += len(x)
        seen["calls"] += 1
        return original(x)

    model.embed = counting_embed
    shapes = torch.arange(1000) % len(SHAPES)
    support_images = draw_shapes(shapes, seed=81)
    support = build_support(
        model, support_images, torch.arange(1000), [str(i) for i in range(1000)]
    )
    query_shapes = torch.randint(
        0, len(SHAPES), (1000,), generator=torch.Generator().manual_seed(0)
    )
    predictions = classify(model, support, draw_shapes(query_shapes, seed=82))
    assert seen["images"] == 2000
    per_batch = embedding_batch_size(tuple(support_images.shape[-2:]), "cpu")
    assert seen["calls"] == 2 * -(-1000 // per_batch)  # batches of the default size, no more
    predicted_shape = torch.tensor([int(p.label) for p in predictions]) % len(SHAPES)
    assert float((predicted_shape == query_shapes).float().mean()) >= 0.95


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_thresholds_that_are_not_finite_are_refused(euclidean_ckpt, value):
    """With nan every comparison is false: every pair "different", no query "unknown"."""
    a, b = one("bar", 1), one("bar", 2)
    with pytest.raises(ArgumentError, match=f"threshold {value}: expected a finite number"):
        compare(euclidean_ckpt, a, b, threshold=value)
    support = build_support(euclidean_ckpt, *shape_set(1, seed=91), list(SHAPES))
    with pytest.raises(ArgumentError, match=f"reject_below {value}: expected a finite number"):
        classify(euclidean_ckpt, support, a[None], reject_below=value)
    with pytest.raises(ArgumentError, match=f"--threshold {value}: expected a finite number"):
        finite_number(value, "--threshold")
    assert finite_number(None, "--threshold") is None and finite_number(-1, "t") == -1.0
