"""Losses against values worked out by hand or by brute force: prototypical (with its accuracy
and temperature), contrastive, BCE on logits, and triplet with hard and semi-hard mining."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from siamnet.models.losses import bce_loss, contrastive_loss, prototypical_loss, triplet_loss

# --- prototypical ------------------------------------------------------------------------------

# A 2-way 2-shot episode in the plane. Class 0: (0, 0) and (2, 0), prototype (1, 0).
# Class 1: (0, 2) and (0, 4), prototype (0, 3).
SUPPORT = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 4.0]]
SUPPORT_LABELS = [0, 0, 1, 1]
# Squared distances to the prototypes (1, 0) and (0, 3):
#   (1, 1), class 0: d0 = 0 + 1 = 1, d1 = 1 + 4 = 5  -> nearest 0, right
#   (0, 2), class 1: d0 = 1 + 4 = 5, d1 = 0 + 1 = 1  -> nearest 1, right
#   (1, 2), class 0: d0 = 0 + 4 = 4, d1 = 1 + 1 = 2  -> nearest 1, wrong
QUERY = [[1.0, 1.0], [0.0, 2.0], [1.0, 2.0]]
QUERY_LABELS = [0, 1, 0]
SQUARED = [(1.0, 5.0), (5.0, 1.0), (4.0, 2.0)]


def hand_prototypical_loss(temperature: float) -> float:
    """Mean over queries of ``-log softmax(-d² / T)[label] = d_y / T + log Σ_c exp(-d_c / T)``."""
    total = 0.0
    for (d0, d1), label in zip(SQUARED, QUERY_LABELS, strict=True):
        d_label = (d0, d1)[label]
        total += d_label / temperature + math.log(
            math.exp(-d0 / temperature) + math.exp(-d1 / temperature)
        )
    return total / len(SQUARED)


def episode() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(SUPPORT),
        torch.tensor(SUPPORT_LABELS),
        torch.tensor(QUERY),
        torch.tensor(QUERY_LABELS),
    )


def test_prototypical_loss_at_temperature_one_matches_the_hand_computation():
    # (1 + log(e^-1 + e^-5) + 1 + log(e^-5 + e^-1) + 4 + log(e^-4 + e^-2)) / 3
    expected = (
        2 * (1 + math.log(math.exp(-1) + math.exp(-5))) + 4 + math.log(math.exp(-4) + math.exp(-2))
    ) / 3
    assert hand_prototypical_loss(1.0) == pytest.approx(expected)
    loss, accuracy = prototypical_loss(*episode(), ways=2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert accuracy.item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_prototypical_loss_divides_squared_distances_by_the_temperature(temperature):
    expected = hand_prototypical_loss(temperature)
    assert expected != pytest.approx(hand_prototypical_loss(1.0))
    loss, accuracy = prototypical_loss(*episode(), ways=2, temperature=temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert accuracy.item() == pytest.approx(2 / 3)  # the temperature never changes the argmax


def test_a_learned_temperature_tensor_gets_a_gradient():
    log_t = torch.tensor(math.log(2.0), requires_grad=True)
    loss, _ = prototypical_loss(*episode(), ways=2, temperature=log_t.exp())
    assert loss.item() == pytest.approx(hand_prototypical_loss(2.0), rel=1e-6)
    loss.backward()
    # d loss / d log T by finite differences of the hand formula
    h = 1e-4
    up, down = hand_prototypical_loss(2.0 * math.exp(h)), hand_prototypical_loss(2.0 * math.exp(-h))
    assert log_t.grad.item() == pytest.approx((up - down) / (2 * h), rel=1e-3)


def test_prototypical_accuracy_is_one_when_every_query_is_nearest_its_prototype():
    support, support_labels, _, _ = episode()
    support = support.double()  # the loss is tiny: compare in double precision
    query = torch.tensor([[1.0, 0.1], [0.1, 3.0]], dtype=torch.float64)
    loss, accuracy = prototypical_loss(support, support_labels, query, torch.tensor([0, 1]), 2)
    assert accuracy.item() == 1.0
    # d² = (0 + 0.01, 1 + 8.41) and (0.81 + 9, 0.01 + 0): both queries are sure of their class
    d = [(0.01, 9.41), (9.81, 0.01)]
    per_query = [0.01 + math.log(math.exp(-d0) + math.exp(-d1)) for d0, d1 in d]
    expected = sum(per_query) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_a_few_adam_steps_reduce_the_prototypical_loss_on_a_fixed_episode():
    torch.manual_seed(0)
    ways, shots, queries, dim = 3, 2, 3, 8
    centres = torch.randn(ways, dim) * 2
    support_labels = torch.arange(ways).repeat_interleave(shots)
    query_labels = torch.arange(ways).repeat_interleave(queries)
    support_x = centres[support_labels] + torch.randn(ways * shots, dim)
    query_x = centres[query_labels] + torch.randn(ways * queries, dim)
    net = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, accuracy = prototypical_loss(
            net(support_x), support_labels, net(query_x), query_labels, ways
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert accuracy.item() == 1.0


# --- contrastive and BCE -------------------------------------------------------------------------


def test_contrastive_loss_on_a_positive_a_negative_inside_and_one_outside_the_margin():
    margin = 2.0
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[1.3, 1.4], [0.3, 0.4], [3.0, 4.0]])
    target = torch.tensor([1, 0, 0])
    # distances: 0.5 (same class), 0.5 (different, inside the margin), 5 (different, outside)
    positive = 0.5 * 0.5**2  # ½ d²
    inside = 0.5 * (margin - 0.5) ** 2  # ½ (m − d)²
    outside = 0.0  # ½ max(0, m − 5)²
    expected = (positive + inside + outside) / 3
    assert expected == pytest.approx(0.41666666)
    a.requires_grad_(True)
    loss = contrastive_loss(a, b, target, margin=margin)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(a.grad[2]) == 0  # a negative beyond the margin pulls nothing
    # the positive pair is pulled together, the close negative pushed apart
    assert (a.grad[0] * (b[0] - a[0].detach())).sum() < 0
    assert (a.grad[1] * (b[1] - a[1].detach())).sum() > 0


def test_contrastive_loss_default_margin_is_one():
    a, b = torch.zeros(1, 3), torch.tensor([[0.0, 0.6, 0.0]])
    assert contrastive_loss(a, b, torch.tensor([0])).item() == pytest.approx(0.5 * 0.4**2)
    assert contrastive_loss(a, b, torch.tensor([1.0])).item() == pytest.approx(0.5 * 0.6**2)


def test_bce_loss_matches_the_formula_on_logits():
    logits = [-3.0, -0.7, 0.0, 0.4, 2.5]
    targets = [0, 1, 1, 0, 1]

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    expected = -sum(
        y * math.log(sigmoid(x)) + (1 - y) * math.log(1 - sigmoid(x))
        for x, y in zip(logits, targets, strict=True)
    ) / len(logits)
    loss = bce_loss(torch.tensor(logits), torch.tensor(targets))  # integer targets accepted
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bce_loss_is_finite_for_extreme_logits():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    right = bce_loss(logits[:2], torch.tensor([1.0, 0.0]))
    wrong = bce_loss(logits[2:], torch.tensor([0.0, 1.0]))
    assert torch.isfinite(right) and right.item() == pytest.approx(0.0, abs=1e-30)
    assert torch.isfinite(wrong) and wrong.item() == pytest.approx(100.0)  # log(1 + e^100)
    (right + wrong).backward()
    assert torch.isfinite(logits.grad).all()
    # d/dx of log(1 + e^x) at x = 100 is σ(100) ≈ 1, halved by the mean over 2
    assert logits.grad[2:].abs().tolist() == pytest.approx([0.5, 0.5])


# --- triplet -------------------------------------------------------------------------------------


def pk_batch(p: int = 4, k: int = 3, dim: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(p * k, dim, generator=g, dtype=torch.float64)
    embeddings[0] += 6.0  # an outlier: some anchor-positive pairs have no farther negative
    labels = torch.arange(p).repeat_interleave(k)
    return embeddings, labels


def brute_force_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, mining: str):
    """The loss from a plain loop over every (anchor, positive, negative), in Python floats.

    Returns the loss and, for semi-hard mining, how many anchor-positive pairs had no negative
    farther than the positive (and so fell back to the farthest negative)."""
    points = [list(map(float, row)) for row in embeddings]
    y = labels.tolist()
    n = len(points)

    def dist(i: int, j: int) -> float:
        return math.dist(points[i], points[j])

    fallbacks = 0
    if mining == "hard":
        terms = []
        for a in range(n):
            pos = [dist(a, p) for p in range(n) if p != a and y[p] == y[a]]
            neg = [dist(a, q) for q in range(n) if y[q] != y[a]]
            if pos and neg:
                terms.append(max(0.0, max(pos) - min(neg) + margin))
        return sum(terms) / len(terms), fallbacks
    terms = []
    for a, p in itertools.permutations(range(n), 2):
        if y[a] != y[p]:
            continue
        d_ap = dist(a, p)
        neg = [dist(a, q) for q in range(n) if y[q] != y[a]]
        farther = [d for d in neg if d > d_ap]
        if farther:
            d_an = min(farther)  # semi-hard: the nearest negative beyond the positive
        else:
            d_an = max(neg)
            fallbacks += 1
        terms.append(max(0.0, d_ap - d_an + margin))
    return sum(terms) / len(terms), fallbacks


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_semihard_triplet_loss_matches_a_brute_force_loop(seed, margin):
    embeddings, labels = pk_batch(seed=seed)
    expected, fallbacks = brute_force_triplet(embeddings, labels, margin, "semihard")
    assert fallbacks > 0  # both branches of the mining are exercised
    assert expected > 0
    got = triplet_loss(embeddings, labels, margin=margin, mining="semihard")
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_batch_hard_triplet_loss_matches_a_brute_force_loop(seed, margin):
    embeddings, labels = pk_batch(seed=seed)
    expected, _ = brute_force_triplet(embeddings, labels, margin, "hard")
    got = triplet_loss(embeddings, labels, margin=margin, mining="hard")
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_triplet_loss_in_float32_on_shuffled_labels():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(3).repeat_interleave(4)[torch.randperm(12, generator=g)]
    embeddings = torch.randn(12, 4, generator=g)
    for mining in ("hard", "semihard"):
        expected, _ = brute_force_triplet(embeddings, labels, 0.5, mining)
        got = triplet_loss(embeddings, labels, margin=0.5, mining=mining)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("mining", ["hard", "semihard"])
def test_triplet_loss_is_zero_when_classes_are_far_apart(mining):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(3)
    centres = torch.eye(4, 6) * 50.0
    embeddings = (centres[labels] + 0.1 * torch.randn(12, 6, generator=g)).requires_grad_(True)
    loss = triplet_loss(embeddings, labels, margin=1.0, mining=mining)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(embeddings.grad) == 0


def test_triplet_loss_refuses_an_unknown_mining():
    embeddings, labels = pk_batch()
    with pytest.raises(ValueError, match="mining"):
        triplet_loss(embeddings, labels, mining="easy")


@pytest.mark.parametrize("mining", ["semihard", "hard"])
def test_triplet_loss_is_zero_without_any_positive_pair(mining):
    embeddings = torch.randn(4, 3, requires_grad=True)
    loss = triplet_loss(embeddings, torch.arange(4), mining=mining)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.count_nonzero(embeddings.grad) == 0
