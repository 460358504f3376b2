"""Class prototypes and class scores: one helper behind the prototypical loss, inference and
few-shot evaluation, with one error for the same bad input wherever it comes in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siamnet.data.episodes import Episode
from siamnet.errors import ArgumentError, DataError
from siamnet.evaluate import episode_predictions
from siamnet.infer import SupportSet, class_scores
from siamnet.models.heads import build_head
from siamnet.models.losses import prototypical_loss
from siamnet.models.prototypes import class_counts, class_prototypes
from siamnet.models.prototypes import class_scores as support_class_scores
from siamnet.models.siamese import SiameseNet


def head_model(kind: str, dim: int = 4) -> SiameseNet:
    torch.manual_seed(0)
    return SiameseNet(nn.Identity(), build_head(kind, dim)).double().eval()


def test_prototypes_are_class_means_with_and_without_batch_dimensions():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 1, 2, 2, 2], [2, 1, 1, 1, 0, 0]])
    batched = class_prototypes(emb, labels, 4)
    assert batched.shape == (2, 4, 4)
    for e in range(2):
        single = class_prototypes(emb[e], labels[e], 4)
        torch.testing.assert_close(batched[e], single)
        for k in range(3):
            torch.testing.assert_close(single[k], emb[e][labels[e] == k].mean(0))
        assert bool((single[3] == 0).all())  # a class with no item
    assert class_counts(labels, 4, torch.float64).tolist() == [[2, 1, 3, 0], [2, 3, 1, 0]]


def test_prototypes_carry_gradients():
    emb = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: class_prototypes(x, torch.tensor([0, 1, 1, 0]), 2), (emb,)
    )


@pytest.mark.parametrize("kind", ["l1", "euclidean", "cosine"])
@pytest.mark.parametrize("scoring", ["mean", "prototype"])
def test_class_scores_against_pair_by_pair_scores(kind, scoring):
    model = head_model(kind)
    head = model.head
    g = torch.Generator().manual_seed(1)
    support = torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1])
    queries = torch.randn(3, 4, generator=g, dtype=torch.float64)
    got = support_class_scores(head, queries, support, labels, 4, scoring)
    for qi in range(3):
        for k in range(3):
            members = support[labels == k]
            if scoring == "mean":
                want = head.to_score(head(queries[qi].expand_as(members), members)).mean()
            else:
                want = head.to_score(head(queries[qi], members.mean(0)))
            torch.testing.assert_close(got[qi, k], want)
    assert bool(torch.isinf(got[:, 3]).all()) and bool((got[:, 3] < 0).all())
    batched = support_class_scores(head, queries[None], support[None], labels[None], 4, scoring)
    torch.testing.assert_close(batched[0], got)


def test_labels_out_of_range_are_one_error_everywhere():
    message = r"support set: labels must lie in 0\.\.1, found 0\.\.2"
    emb = torch.randn(3, 4, dtype=torch.float64)
    bad = torch.tensor([0, 1, 2])
    with pytest.raises(DataError, match=message):
        class_prototypes(emb, bad, 2)
    with pytest.raises(DataError, match=message):
        prototypical_loss(emb, bad, emb, torch.tensor([0, 1, 1]), ways=2)
    with pytest.raises(DataError, match=message):
        SupportSet(emb, bad, ["a", "b"])
    ep = Episode(
        support=torch.tensor([[0, 1, 2]]),
        support_labels=bad[None],
        query=torch.tensor([[0]]),
        query_labels=torch.tensor([[0]]),
        classes=torch.tensor([[0, 1]]),
    )
    with pytest.raises(DataError, match=message):
        episode_predictions(head_model("euclidean"), emb, ep, 2, "prototype")
    with pytest.raises(DataError, match=message):
        episode_predictions(head_model("euclidean"), emb, ep, 2, "mean")


def test_an_unknown_scoring_is_one_error_everywhere():
    model = head_model("euclidean")
    emb = torch.randn(2, 4, dtype=torch.float64)
    support = SupportSet(emb, torch.tensor([0, 1]), ["a", "b"])
    pair, one = torch.tensor([[0, 1]]), torch.tensor([[0]])
    ep = Episode(support=pair, support_labels=pair, query=one, query_labels=one, classes=pair)
    message = "scoring 'vote': expected 'mean' or 'prototype'"
    with pytest.raises(ArgumentError, match=message):
        class_scores(model, support, emb, "vote")
    with pytest.raises(ArgumentError, match=message):
        episode_predictions(model, emb, ep, 2, "vote")
