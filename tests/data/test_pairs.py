"""Pair sampling: balance, class rules, reproducibility, and P×K batches."""

from __future__ import annotations

import pytest
import torch

from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import (
    PairSampler,
    PKSampler,
    distinct_ranks,
    fixed_pairs,
    gather_images,
    sample_pairs,
)
from siamnet.errors import ArgumentError, DataError

# Non-contiguous label values, uneven class sizes, and one single-example class (-3).
ODD_LABELS = torch.tensor([5, 5, 5, 9, 9, -3, 100, 100, 100, 100, 7, 7, 42, 42, 42, 42, 42, 42])


def draw(labels: torch.Tensor, batch: int = 10, batches: int = 2000, seed: int = 0):
    sampler = PairSampler(labels)
    return sampler.sample_indices(batch, torch.Generator().manual_seed(seed), num_batches=batches)


def test_exactly_half_positive_and_class_rules_hold():
    left, right, target = draw(ODD_LABELS, batch=10)
    assert left.shape == right.shape == target.shape == (2000, 10)
    assert left.dtype == right.dtype == torch.int64 and target.dtype == torch.float32
    assert torch.equal(target[:, :5], torch.zeros(2000, 5))
    assert torch.equal(target[:, 5:], torch.ones(2000, 5))
    same = ODD_LABELS[left] == ODD_LABELS[right]
    assert torch.equal(same, target == 1)  # every positive same class, every negative different
    assert bool((left != right)[target == 1].all())  # a positive never repeats an index


def test_odd_batch_size_has_one_more_positive():
    left, right, target = PairSampler(ODD_LABELS).sample_indices(7, torch.Generator())
    assert left.shape == (7,) and target.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_every_class_and_example_is_drawn_and_single_examples_never_positive():
    left, right, target = draw(ODD_LABELS, batch=10)
    pos = target == 1
    values = set(ODD_LABELS.tolist())
    assert set(ODD_LABELS[left[~pos]].tolist()) == values
    assert set(ODD_LABELS[right[~pos]].tolist()) == values
    assert set(ODD_LABELS[left[pos]].tolist()) == values - {-3}
    single = int(torch.nonzero(ODD_LABELS == -3))
    assert not bool((left[pos] == single).any() or (right[pos] == single).any())
    drawn = torch.cat([left.flatten(), right.flatten()]).unique()
    assert torch.equal(drawn, torch.arange(len(ODD_LABELS)))


def test_classes_and_examples_are_roughly_uniform():
    labels = torch.arange(4).repeat_interleave(torch.tensor([2, 10, 50, 300]))
    left, right, target = draw(labels, batch=100, batches=2000)  # 100,000 pairs per half
    neg = target == 0
    per_class = torch.bincount(labels[left[neg]], minlength=4).double() / neg.sum()
    assert torch.allclose(per_class, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
    # the offset trick: for a given left class, the other three classes are equally likely
    right_given_0 = labels[right[neg & (labels[left] == 0)]]
    share = torch.bincount(right_given_0, minlength=4)[1:].double() / len(right_given_0)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    # within the big class, both sides of a positive are uniform over its 300 examples
    big = labels == 3
    in_big = torch.cat([left[~neg], right[~neg]])
    in_big = in_big[big[in_big]]
    counts = torch.bincount(in_big, minlength=len(labels))[big].double()
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_reproducible_under_a_seed_and_different_across_seeds():
    a = draw(ODD_LABELS, seed=3, batches=5)
    b = draw(ODD_LABELS, seed=3, batches=5)
    c = draw(ODD_LABELS, seed=4, batches=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_one_batch_at_a_time_continues_the_stream():
    sampler = PairSampler(ODD_LABELS)
    g = torch.Generator().manual_seed(0)
    first = sampler.sample_indices(8, g)
    second = sampler.sample_indices(8, g)
    assert first[0].shape == (8,)
    assert not (torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]))


def test_batches_stream_matches_drawing_chunks():
    stream = PairSampler(ODD_LABELS).batches(6, torch.Generator().manual_seed(2), chunk=4)
    drawn = [next(stream) for _ in range(8)]
    g = torch.Generator().manual_seed(2)
    sampler = PairSampler(ODD_LABELS)
    chunks = [sampler.sample_indices(6, g, num_batches=4) for _ in range(2)]
    for i, (left, right, target) in enumerate(drawn):
        assert left.shape == right.shape == target.shape == (6,)
        assert torch.equal(left, chunks[i // 4][0][i % 4])
        assert torch.equal(right, chunks[i // 4][1][i % 4])
        assert target.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_batches_copy_the_pairs_of_the_index_stream():
    n = len(ODD_LABELS)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 3, 3).contiguous()
    sampler = PairSampler(ODD_LABELS)
    indices = sampler.batches(6, torch.Generator().manual_seed(5), chunk=3)
    pictures = sampler.image_batches(images, 6, torch.Generator().manual_seed(5), chunk=3)
    for _ in range(7):
        (left, right, target), (li, ri, ti) = next(pictures), next(indices)
        assert left.shape == right.shape == (6, 1, 3, 3) and left.dtype == torch.uint8
        assert torch.equal(left, images[li]) and torch.equal(right, images[ri])
        assert torch.equal(target, ti)


def test_two_classes_with_two_examples_each():
    labels = torch.tensor([1, 3, 1, 3])
    left, right, target = draw(labels, batch=4, batches=200)
    pos = target == 1
    assert bool((left[pos] != right[pos]).all())
    assert torch.equal(labels[left] == labels[right], pos)


def test_no_class_with_two_examples_is_a_clear_error():
    with pytest.raises(DataError, match="no class has two examples"):
        PairSampler(torch.tensor([0, 1, 2, 3]))


def test_a_single_class_is_a_clear_error():
    with pytest.raises(DataError, match="at least two classes"):
        PairSampler(torch.tensor([4, 4, 4]))


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, True])
def test_bad_batch_size_is_an_argument_error(bad):
    with pytest.raises(ArgumentError, match="batch size"):
        PairSampler(ODD_LABELS).sample_indices(bad, torch.Generator())


def test_sample_pairs_returns_uint8_images_of_the_drawn_pairs():
    g = torch.Generator().manual_seed(0)
    n = len(ODD_LABELS)
    # every image is filled with its own index, so the images tell which example was drawn
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 5).contiguous()
    classes = sorted(set(ODD_LABELS.tolist()))
    dense = torch.tensor([classes.index(v) for v in ODD_LABELS.tolist()])
    data = LabeledImages(images, dense, [str(c) for c in classes])
    left, right, target = sample_pairs(data, 12, g)
    assert left.dtype == right.dtype == torch.uint8
    assert left.shape == right.shape == (12, 1, 4, 5) and target.shape == (12,)
    li, ri = left[:, 0, 0, 0].long(), right[:, 0, 0, 0].long()
    assert torch.equal(dense[li] == dense[ri], target == 1)
    many = sample_pairs(data, 12, g, num_batches=3)
    assert many[0].shape == (3, 12, 1, 4, 5) and many[2].shape == (3, 12)


def test_sample_pairs_follows_a_changed_data_set():
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    one = LabeledImages(images, torch.tensor([0, 0, 1, 1]), ["a", "b"])
    two = LabeledImages(images, torch.tensor([0, 1, 1, 1]), ["a", "b"])
    sample_pairs(one, 4, g)
    left, right, target = PairSampler(two.labels).sample_indices(4, g, num_batches=50)
    assert bool((two.labels[left[target == 1]] == 1).all())
    imgs = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    two = LabeledImages(imgs, torch.tensor([0, 1, 1, 1]), ["a", "b"])
    lft, _, tgt = sample_pairs(two, 4, g, num_batches=50)
    assert bool((lft[tgt == 1][:, 0, 0, 0] >= 1).all())  # class "a" has a single example


def test_gather_images_matches_advanced_indexing():
    images = torch.randint(0, 256, (50, 3, 5, 6), dtype=torch.uint8)
    index = torch.randint(0, 50, (4, 7))
    assert torch.equal(gather_images(images, index), images[index])


def test_fixed_pairs_are_the_same_for_the_same_seed():
    labels = torch.arange(10).repeat(30)
    a, b = fixed_pairs(labels, 500, seed=7), fixed_pairs(labels, 500, seed=7)
    c = fixed_pairs(labels, 500, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    left, right, target = a
    assert left.shape == (500,) and int(target.sum()) == 250
    assert torch.equal(labels[left] == labels[right], target == 1)


def test_pk_sampler_draws_p_distinct_classes_of_k_examples():
    labels = torch.arange(8).repeat_interleave(torch.tensor([10, 10, 3, 5, 6, 1, 2, 4]))
    sampler = PKSampler(labels, classes_per_batch=4, examples_per_class=4)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        index = sampler.sample_indices(g)
        assert index.shape == (16,) and index.dtype == torch.int64
        per_class = labels[index].view(4, 4)
        assert bool((per_class == per_class[:, :1]).all())  # K consecutive of one class
        chosen = per_class[:, 0]
        assert len(set(chosen.tolist())) == 4 and 5 not in chosen.tolist()  # 5: one example
        for row, c in zip(index.view(4, 4), chosen.tolist(), strict=True):
            if int((labels == c).sum()) >= 4:
                assert len(set(row.tolist())) == 4  # without replacement
        seen.update(chosen.tolist())
    assert seen == {0, 1, 2, 3, 4, 6, 7}


def test_pk_sampler_takes_all_classes_when_fewer_than_p_and_errors_below_two():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    sampler = PKSampler(labels, classes_per_batch=10, examples_per_class=2)
    assert sampler.classes_per_batch == 2 and sampler.batch_size == 4
    assert sorted(labels[sampler.sample_indices(torch.Generator())].tolist()) == [0, 0, 1, 1]
    with pytest.raises(DataError, match="at least 2 classes with two or more examples"):
        PKSampler(torch.tensor([0, 0, 1, 2]), 2, 2)


def test_distinct_ranks_are_distinct_in_range_and_uniform():
    counts = torch.tensor([5, 3, 100]).repeat(3000)
    ranks = distinct_ranks(counts, 3, torch.Generator().manual_seed(0))
    assert ranks.shape == (9000, 3)
    assert bool((ranks >= 0).all()) and bool((ranks < counts[:, None]).all())
    ordered = ranks.sort(dim=1).values
    assert bool((ordered[:, 1:] != ordered[:, :-1]).all())  # distinct in every row
    # the order is random too: the first rank of a row with count 5 is uniform over 0..4
    share = torch.bincount(ranks[0::3, 0], minlength=5).double() / 3000
    assert torch.allclose(share, torch.full((5,), 0.2, dtype=torch.float64), atol=0.04)
    # a row with count == size is a permutation of 0..size-1
    assert torch.equal(ordered[1::3], torch.arange(3).expand(3000, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_labels_with_a_cpu_generator():
    labels = ODD_LABELS.cuda()
    left, right, target = PairSampler(labels).sample_indices(10, torch.Generator(), 100)
    assert left.is_cuda and right.is_cuda and target.is_cuda
    assert torch.equal(labels[left] == labels[right], target == 1)
    assert bool((left != right)[target == 1].all())
    index = PKSampler(labels, 2, 2).sample_indices(torch.Generator())
    assert index.is_cuda and bool((labels[index].view(2, 2).diff(dim=1) == 0).all())
