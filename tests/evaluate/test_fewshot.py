"""N-way K-shot: the batched evaluator against a slow, obviously correct reference, within-group
episodes, chance and perfect models, capped ways."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from siamnet.data.episodes import episodes_for_evaluation
from siamnet.evaluate import capped_ways, episode_predictions, few_shot_accuracy
from siamnet.models.heads import build_head
from siamnet.models.siamese import SiameseNet


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


def test_ways_are_capped_and_deduplicated():
    labels = torch.arange(4).repeat_interleave(3)
    assert capped_ways(labels, [5, 10, 20], need=2) == [4]
    assert capped_ways(labels, [2, 3, 5], need=2) == [2, 3, 4]
    assert capped_ways(labels, [5], need=4) == []  # no class has 4 examples
    groups = torch.tensor([0, 0, 0, 1])
    assert capped_ways(labels, [5, 2], need=2, groups=groups) == [3, 2]
