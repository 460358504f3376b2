"""Episodes: shapes, disjoint support and query, distinct classes, groups, errors."""

from __future__ import annotations

import pytest
import torch

from siamnet.data.episodes import Episode, EpisodeSampler, episodes_for_evaluation
from siamnet.errors import ArgumentError, DataError

# 12 classes with non-contiguous label values 0, 3, 6, ... and 6..11 examples each
VALUES = torch.arange(12) * 3
LABELS = VALUES.repeat_interleave(torch.arange(6, 18))


def check_episode(ep: Episode, labels: torch.Tensor, ways: int, shots: int, queries: int) -> None:
    assert ep.support.shape == ep.support_labels.shape == (ways * shots,)
    assert ep.query.shape == ep.query_labels.shape == (ways * queries,)
    assert ep.classes.shape == (ways,)
    assert all(t.dtype == torch.int64 for t in (ep.support, ep.query, ep.classes))
    assert len(set(ep.classes.tolist())) == ways  # N distinct classes
    indices = torch.cat([ep.support, ep.query]).tolist()
    assert len(set(indices)) == len(indices)  # support and query disjoint, no repeats
    assert torch.equal(ep.support_labels, torch.arange(ways).repeat_interleave(shots))
    assert torch.equal(ep.query_labels, torch.arange(ways).repeat_interleave(queries))
    # local label i is the data set's class classes[i]
    assert torch.equal(labels[ep.support], ep.classes[ep.support_labels])
    assert torch.equal(labels[ep.query], ep.classes[ep.query_labels])


def test_single_episodes_have_the_right_shapes_and_contents():
    sampler = EpisodeSampler(LABELS, ways=5, shots=2, queries=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        check_episode(sampler.sample(g), LABELS, 5, 2, 4)


def test_many_episodes_at_once_and_every_class_used():
    ep = EpisodeSampler(LABELS, ways=4, shots=1, queries=5).sample_many(2000, torch.Generator())
    assert ep.support.shape == (2000, 4) and ep.query.shape == (2000, 20)
    assert ep.classes.shape == (2000, 4) and ep.support_labels.shape == (2000, 4)
    for e in range(0, 2000, 100):
        check_episode(Episode(*(t[e] for t in vars(ep).values())), LABELS, 4, 1, 5)
    assert set(ep.classes.flatten().tolist()) == set(VALUES.tolist())
    # the class of a way is uniform: each of 12 classes fills about a third of the episodes
    share = torch.bincount(ep.classes.flatten() // 3, minlength=12).double() / 2000
    assert torch.allclose(share, torch.full((12,), 4 / 12, dtype=torch.float64), atol=0.05)


def test_seeded_episodes_repeat_and_differ_across_seeds():
    a = episodes_for_evaluation(LABELS, 5, 1, 2, 20, seed=1)
    b = episodes_for_evaluation(LABELS, 5, 1, 2, 20, seed=1)
    c = episodes_for_evaluation(LABELS, 5, 1, 2, 20, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    assert not torch.equal(a.support, c.support)


def test_within_group_episodes_use_one_group():
    labels = torch.arange(9).repeat_interleave(4)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])  # group 1 has only 2 classes
    sampler = EpisodeSampler(labels, ways=3, shots=1, queries=1, groups=groups)
    ep = sampler.sample_many(300, torch.Generator().manual_seed(0))
    episode_groups = groups[ep.classes]
    assert bool((episode_groups == episode_groups[:, :1]).all())
    assert set(episode_groups[:, 0].tolist()) == {0, 2}  # group 1 cannot fill 3 ways


def test_no_group_with_enough_classes_is_a_clear_error():
    labels = torch.arange(4).repeat_interleave(3)
    with pytest.raises(DataError, match="largest group has 2"):
        EpisodeSampler(labels, 3, 1, 1, groups=torch.tensor([0, 0, 1, 1]))


def test_groups_must_cover_every_label():
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        EpisodeSampler(torch.tensor([0, 0, 5, 5]), 2, 1, 1, groups=torch.tensor([0, 0]))


def test_a_class_with_fewer_than_shots_plus_queries_is_named():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    with pytest.raises(DataError, match="need 3 examples per class, but class 'two' has 2"):
        EpisodeSampler(labels, 2, 1, 2, class_names=["zero", "one", "two"])


def test_small_classes_can_be_skipped_when_enough_remain():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    sampler = EpisodeSampler(labels, 2, 1, 2, skip_small_classes=True)
    ep = sampler.sample_many(50, torch.Generator())
    assert set(ep.classes.flatten().tolist()) == {0, 1}
    with pytest.raises(DataError, match="3-way episodes need 3 classes .* 2 of 3 classes"):
        EpisodeSampler(labels, 3, 1, 2, skip_small_classes=True)


@pytest.mark.parametrize("field", ["ways", "shots", "queries"])
def test_non_positive_sizes_are_argument_errors(field):
    sizes = {"ways": 2, "shots": 1, "queries": 1, field: 0}
    with pytest.raises(ArgumentError, match=field):
        EpisodeSampler(LABELS, **sizes)


def test_large_class_examples_are_uniform():
    labels = torch.cat([torch.zeros(40, dtype=torch.int64), torch.ones(40, dtype=torch.int64)])
    ep = EpisodeSampler(labels, 2, 3, 2).sample_many(2000, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.cat([ep.support.flatten(), ep.query.flatten()]), minlength=80)
    expected = 2000 * 5 / 40
    assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected
    # support and query positions are exchangeable: no example prefers one side
    support_share = torch.bincount(ep.support.flatten(), minlength=80) / counts
    assert bool(((support_share - 3 / 5).abs() < 0.15).all())


def test_episode_to_moves_every_field():
    ep = EpisodeSampler(LABELS, 3, 1, 1).sample(torch.Generator())
    moved = ep.to("cpu")
    assert all(
        torch.equal(x, y) for x, y in zip(vars(ep).values(), vars(moved).values(), strict=True)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_labels_with_a_cpu_generator():
    labels = LABELS.cuda()
    ep = EpisodeSampler(labels, 3, 1, 2, groups=torch.arange(36) % 2).sample(torch.Generator())
    assert ep.support.is_cuda and ep.classes.is_cuda
    check_episode(ep.to("cpu"), LABELS, 3, 1, 2)
