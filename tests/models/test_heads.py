"""Heads: aligned and all-pairs scores by hand and against each other, the one L1 kernel
against brute force (with batch dimensions), prepared-gallery scores in the head's order, and
a user's own head used by evaluation, inference and gallery search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siamnet.errors import ArgumentError
from siamnet.evaluate import few_shot_accuracy
from siamnet.gallery import ExactSearch, make_searcher
from siamnet.gallery.store import Gallery
from siamnet.infer import build_support, classify, compare
from siamnet.models import CosineHead, DistanceHead, L1Head, SiameseNet, build_head
from siamnet.models.heads import HEADS, PairHead, weighted_l1


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_head_scores_aligned_pairs_and_agrees_with_its_pairwise_form():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    for kind in ("l1", "euclidean", "cosine"):
        head = build_head(kind, 7)
        with torch.no_grad():
            scores = head(a, b)
            assert scores.shape == (5,), kind
            assert torch.allclose(head(b, a), scores), kind  # symmetric
            table = head.pairwise(a, b)
        assert table.shape == (5, 5)
        assert torch.allclose(table.diagonal(), scores, atol=1e-5), kind
        assert torch.allclose(table[1, 3], head(a[1:2], b[3:4])[0], atol=1e-5), kind


def test_l1_head_is_a_linear_layer_on_the_absolute_difference_and_its_score_a_probability():
    head = L1Head(4)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0]]))
        head.fc.bias.fill_(-1.0)
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[2.0, 2.5, 1.0, -9.0], [0.0, 0.0, 0.0, 0.0]])
    # |a − b| = (1, 0.5, 2, 13): 1 − 1 + 1 + 0 − 1 = 0; identical vectors: the bias, −1
    logits = head(a, b)
    assert logits.tolist() == pytest.approx([0.0, -1.0])
    probability = head.to_score(logits)
    assert probability.tolist() == pytest.approx([0.5, 1 / (1 + 2.718281828459045)])
    far = head.to_score(head(torch.zeros(3, 4), torch.randn(3, 4) * 100))
    assert torch.isfinite(far).all() and ((far >= 0) & (far <= 1)).all()
    assert ((probability > 0) & (probability < 1)).all()


def test_distance_and_cosine_heads_score_by_hand():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert DistanceHead()(a, b).tolist() == pytest.approx([-5.0, -(5.0**0.5)])
    cos = CosineHead()(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [2, 2.0]]))
    assert cos.tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ArgumentError, match="'dot'"):
        build_head("dot", 2)


def brute_l1(head: L1Head, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Logits of every pair by the head itself, one pair at a time."""
    with torch.no_grad():
        return torch.tensor([[float(head(qi, si)) for si in s] for qi in q])


def test_the_l1_kernel_equals_the_head_pair_by_pair_with_and_without_batch_dims():
    head = L1Head(6)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0, -0.3, 3.0]]))
        head.fc.bias.fill_(0.25)
    q, s = torch.randn(5, 6), torch.randn(7, 6)
    torch.testing.assert_close(head.pairwise(q, s), brute_l1(head, q, s), rtol=1e-5, atol=1e-5)
    qb, sb = torch.randn(3, 5, 6), torch.randn(3, 4, 6)
    batched = head.pairwise(qb, sb)
    assert batched.shape == (3, 5, 4)
    for e in range(3):
        torch.testing.assert_close(batched[e], brute_l1(head, qb[e], sb[e]), rtol=1e-5, atol=1e-5)
    w = head.fc.weight.detach().squeeze(0)
    torch.testing.assert_close(weighted_l1(q, s, w), (q[:, None] - s[None]).abs() @ w)


@pytest.mark.parametrize("kind", ["l1", "euclidean", "cosine"])
def test_prepared_scores_rank_like_pairwise_and_convert_to_the_same_score(kind):
    head = build_head(kind, 8)
    q, g = torch.randn(4, 8), torch.randn(30, 8)
    with torch.no_grad():
        want = head.to_score(head.pairwise(q, g))
        keys = head.prepared_scores(q, head.prepare(g))
        got = head.key_to_score(keys)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(
        keys.argsort(1, descending=True)[:, :3], want.argsort(1, descending=True)[:, :3]
    )
    assert head.larger_is_similar


def test_distance_of_a_score_per_head():
    assert DistanceHead().distance(-2.5) == 2.5
    assert CosineHead().distance(0.25) == 0.75
    assert L1Head(2).distance(0.9) is None


class ManhattanHead(PairHead):
    """A head the library does not know: minus the plain L1 distance."""

    kind = "manhattan"
    meaning = "minus the L1 distance between embeddings"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -(a - b).abs().sum(-1)

    def pairwise(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(q, s, p=1)


class Flat(nn.Module):
    """Flattened pixels, times a weight of 1."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.scale


def test_a_users_own_head_serves_evaluation_inference_and_search(monkeypatch):
    monkeypatch.setitem(HEADS, "manhattan", ManhattanHead)
    model = SiameseNet(Flat(), ManhattanHead()).eval()
    images = torch.randint(0, 256, (12, 1, 2, 2), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    images[labels == 0] = 0
    images[labels == 1] = 120
    images[labels == 2] = 250
    emb = model.embed(images)
    fs = few_shot_accuracy(model, emb, labels, ways=3, shots=1, episodes=20, seed=0)
    assert fs.accuracy == 1.0
    support = build_support(model, images[:3], labels[:3], ["a", "b", "c"])
    predicted = [p.label for p in classify(model, support, images)]
    assert predicted == [["a", "b", "c"][int(i)] for i in labels]
    assert compare(model, images[0], images[3], threshold=-1.0).same
    gallery = Gallery(emb, [str(int(i)) for i in labels], [""] * 12, "manhattan", {"sha256": ""})
    idx, scores = make_searcher(gallery, model.head).search(emb[:2], top_k=4)
    assert (labels[idx[0]] == labels[0]).all() and (labels[idx[1]] == labels[1]).all()
    idx2, _ = ExactSearch(emb, model.head).search(emb[:2], top_k=4)
    assert torch.equal(idx, idx2)
    assert (scores <= 0).all()
