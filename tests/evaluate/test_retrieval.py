"""Retrieval metrics against hand-computed values and pytorch-metric-learning's reference."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from siamnet.evaluate.retrieval import retrieval_metrics
from siamnet.models.heads import CosineHead, DistanceHead


def test_hand_computed_case() -> None:
    # points on a line, scored by minus the distance: the ranking of each query is obvious
    emb = torch.tensor([[0.0], [1.0], [10.0], [2.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    result = retrieval_metrics(DistanceHead(), emb, labels, ks=(1, 2))
    assert result is not None
    # query 0: nearest 1 (hit), R=1 -> AP 1.   query 1: nearest 0 (hit) -> AP 1.
    # query 2 (10): 11 (hit), 2 (hit); R=2 -> AP 1, R-prec 1.
    # query 3 (2): 1 (miss), 0 (miss), R=2 -> AP 0, R-prec 0; Recall@2 0.
    # query 4 (11): 10 (hit), 2 (hit) -> AP 1.
    assert result.recall_at_k == {1: pytest.approx(4 / 5), 2: pytest.approx(4 / 5)}
    assert result.map_at_r == pytest.approx(4 / 5)
    assert result.r_precision == pytest.approx(4 / 5)
    assert (result.queries, result.lone) == (5, 0)


def test_partial_precision_and_lone_queries() -> None:
    emb = torch.tensor([[0.0], [0.9], [5.0], [2.0], [3.0], [100.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # class 2 has one image: a lone query
    result = retrieval_metrics(DistanceHead(), emb, labels, ks=(1, 2), chunk=2)
    assert result is not None
    assert (result.queries, result.lone) == (5, 1)
    # R = 2 for queries 0, 1, 2; R = 1 for queries 3, 4. Nearest first:
    # q0: 1 hit, 3 miss -> AP@R 1/2, R-precision 1/2;  q1: 0 hit, 3 miss -> 1/2, 1/2
    # q2: 4 miss, 3 miss -> 0, 0 (and no hit within 2);  q3: 4 hit -> 1, 1;  q4: 3 hit -> 1, 1
    assert result.recall_at_k == {1: pytest.approx(4 / 5), 2: pytest.approx(4 / 5)}
    assert result.map_at_r == pytest.approx(3 / 5)
    assert result.r_precision == pytest.approx(3 / 5)


def test_none_when_every_class_is_alone() -> None:
    assert retrieval_metrics(DistanceHead(), torch.randn(3, 4), torch.tensor([0, 1, 2])) is None


@pytest.mark.parametrize("head", [CosineHead(), DistanceHead()])
def test_agrees_with_pytorch_metric_learning(head) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 12, (300,), generator=gen)
    centres = torch.randn(12, 16, generator=gen)
    emb = centres[labels] + 1.5 * torch.randn(300, 16, generator=gen)
    if isinstance(head, CosineHead):
        emb = torch.nn.functional.normalize(emb, dim=1)
    ours = retrieval_metrics(head, emb, labels, chunk=64)
    assert ours is not None
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    ref = calc.get_accuracy(emb, labels)  # reference = the queries, each without itself
    assert ours.recall_at_k[1] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours.r_precision == pytest.approx(ref["r_precision"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    # Recall@K never falls as K grows, and Recall@8 counts a hit within the 8 nearest
    recalls = [ours.recall_at_k[k] for k in (1, 2, 4, 8)]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]
