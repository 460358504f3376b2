"""Pairs inside P×K batches: positions, classes, the pair cap and the balance of weights."""

import pytest
import torch

from siamnet.data.batch_pairs import BatchPairSampler, balance_weights
from siamnet.errors import ArgumentError


def labels_of(classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(per_class)[torch.randperm(classes * per_class)]


def test_every_pair_of_a_batch_is_scored_once_with_its_true_target():
    torch.manual_seed(0)
    labels = labels_of(6, 12)
    sampler = BatchPairSampler(labels, batch_size=20, examples_per_class=5)  # P = 4, K = 5
    batch = sampler.sample(torch.Generator().manual_seed(1))
    index, left, right, target = (batch[k] for k in ("index", "pair_left", "pair_right", "target"))
    assert len(index) == 20 and len(set(index.tolist())) == 20  # K ≤ class size: distinct
    assert len(target) == 20 * 19 // 2 == sampler.pairs_per_batch
    pairs = {(int(a), int(b)) for a, b in zip(left, right, strict=True)}
    assert len(pairs) == len(target) and all(a < b for a, b in pairs)  # each pair once
    same = (labels[index[left]] == labels[index[right]]).float()
    assert torch.equal(same, target)
    assert int(target.sum()) == 4 * (5 * 4 // 2)  # P·K(K−1)/2 positives
    assert torch.equal(target[: int((target == 0).sum())], torch.zeros(int((target == 0).sum())))


def test_the_pair_cap_keeps_positives_and_samples_negatives_without_repeats():
    labels = labels_of(10, 30)
    sampler = BatchPairSampler(labels, batch_size=200, examples_per_class=20, max_pairs=1000)
    batch = sampler.sample(torch.Generator().manual_seed(2))  # 10 × 20: 1,900 positives
    target = batch["target"]
    assert len(target) == 1000 and int(target.sum()) == 500 and int((target == 0).sum()) == 500
    keys = batch["pair_left"] * 1000 + batch["pair_right"]
    assert len(torch.unique(keys)) == 1000
    index = batch["index"]
    same = labels[index[batch["pair_left"]]] == labels[index[batch["pair_right"]]]
    assert torch.equal(same.float(), target)


def test_batches_are_reproducible_from_the_generator():
    labels = labels_of(8, 10)
    sampler = BatchPairSampler(labels, batch_size=40, examples_per_class=4, max_pairs=300)
    a = sampler.sample(torch.Generator().manual_seed(3))
    b = sampler.sample(torch.Generator().manual_seed(3))
    c = sampler.sample(torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["index"], c["index"])


def test_weights_put_half_on_each_side():
    target = torch.tensor([0.0, 0.0, 0.0, 1.0])
    w = balance_weights(target)
    torch.testing.assert_close(w, torch.tensor([1 / 6, 1 / 6, 1 / 6, 0.5]))
    torch.testing.assert_close(balance_weights(torch.zeros(4)), torch.full((4,), 0.25))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"batch_size": 2, "examples_per_class": 2}, "--batch-size 2: in-batch pairs need"),
        ({"batch_size": 20, "examples_per_class": 1}, "examples_per_class must be at least 2"),
        ({"batch_size": 20, "examples_per_class": 4, "max_pairs": 1}, "max_pairs must be"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, words):
    with pytest.raises(ArgumentError, match=words):
        BatchPairSampler(labels_of(4, 6), **kwargs)
