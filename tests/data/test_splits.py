"""Splits by class, by group and by example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from siamnet.data.labeled import LabeledImages
from siamnet.data.pairs import fixed_pairs
from siamnet.data.splits import split_by_class, split_by_example, split_by_group
from siamnet.errors import ArgumentError, DataError
from siamnet.train import TrainConfig, prepare_data


def make_data(counts: list[int], groups: list[str] | None = None) -> LabeledImages:
    """Class c has counts[c] images; every image's pixels hold its own index (mod 256) and its
    row 1 holds its class, so a split can be checked against the original."""
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    n = len(labels)
    images = torch.zeros(n, 1, 2, 3, dtype=torch.uint8)
    images[:, 0, 0, :] = (torch.arange(n) % 256).to(torch.uint8)[:, None]
    images[:, 0, 1, :] = labels.to(torch.uint8)[:, None]
    return LabeledImages(images, labels, [f"c{i}" for i in range(len(counts))], groups, "test")


def original_class(part: LabeledImages) -> list[str]:
    """The original class name of each image of `part`, read from its pixels."""
    return [f"c{int(v)}" for v in part.images[:, 0, 1, 0]]


def test_split_by_named_classes_keeps_names_and_relabels():
    data = make_data([3, 4, 5, 6, 7, 8])
    train, held = split_by_class(data, eval_classes=["c4", "c1"])
    assert train.classes == ["c0", "c2", "c3", "c5"] and held.classes == ["c1", "c4"]
    assert len(train) == 3 + 5 + 6 + 8 and len(held) == 4 + 7
    for part in (train, held):
        assert sorted(set(part.labels.tolist())) == list(range(part.num_classes))
        assert [part.classes[i] for i in part.labels.tolist()] == original_class(part)


def test_split_by_class_fraction_is_seeded_and_disjoint():
    data = make_data([2] * 20)
    a_train, a_held = split_by_class(data, eval_fraction=0.3, seed=1)
    b_train, b_held = split_by_class(data, eval_fraction=0.3, seed=1)
    _, c_held = split_by_class(data, eval_fraction=0.3, seed=2)
    assert a_held.classes == b_held.classes and a_train.classes == b_train.classes
    assert a_held.classes != c_held.classes
    assert len(a_held.classes) == 6 and len(a_train.classes) == 14
    assert not set(a_held.classes) & set(a_train.classes)
    assert set(a_held.classes) | set(a_train.classes) == set(data.classes)


def test_split_by_class_keeps_groups():
    data = make_data([2, 2, 2, 2], groups=["A", "A", "B", "B"])
    train, held = split_by_class(data, eval_classes=["c1", "c2"])
    assert train.groups == ["A", "B"] and held.groups == ["A", "B"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ArgumentError, "exactly one"),
        ({"eval_classes": ["c1", "c2"], "eval_fraction": 0.5}, ArgumentError, "exactly one"),
        ({"eval_classes": ["c9"]}, DataError, "no class named 'c9'"),
        ({"eval_fraction": 0.0}, ArgumentError, "strictly between 0 and 1, got 0.0"),
        ({"eval_fraction": 1.5}, ArgumentError, "strictly between 0 and 1"),
        ({"eval_classes": ["c1"]}, ArgumentError, "4 classes for training and 1 held out"),
        ({"eval_classes": ["c0", "c1", "c2", "c3"]}, ArgumentError, "leaving 1 classes"),
        ({"eval_fraction": 0.1}, ArgumentError, "holds out 0"),
    ],
)
def test_bad_class_splits_are_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        split_by_class(make_data([2] * 5), **kwargs)


def test_split_by_group_holds_out_whole_groups():
    groups = ["Greek"] * 3 + ["Latin"] * 2 + ["Runic"] * 4
    data = make_data([2] * 9, groups=groups)
    train, held = split_by_group(data, eval_groups=["Latin", "Runic"])
    assert train.groups == ["Greek"] * 3 and set(held.groups) == {"Latin", "Runic"}
    assert held.classes == [f"c{i}" for i in range(3, 9)]
    a = split_by_group(data, eval_fraction=0.34, seed=5)[1].classes
    assert a == split_by_group(data, eval_fraction=0.34, seed=5)[1].classes
    with pytest.raises(DataError, match="no group named 'Cyrillic'"):
        split_by_group(data, eval_groups=["Cyrillic"])
    with pytest.raises(ArgumentError, match="leaving 0 groups"):
        split_by_group(data, eval_groups=["Greek", "Latin", "Runic"])
    with pytest.raises(DataError, match="no groups"):
        split_by_group(make_data([2, 2, 2, 2]), eval_fraction=0.5)


def test_split_by_example_is_stratified_and_seeded():
    data = make_data([1, 2, 3, 10, 100])
    rest, held = split_by_example(data, 0.2, seed=0)
    assert rest.classes == held.classes == data.classes
    assert torch.bincount(held.labels, minlength=5).tolist() == [0, 1, 1, 2, 20]
    assert torch.bincount(rest.labels, minlength=5).tolist() == [1, 1, 2, 8, 80]
    ids_rest = set(rest.images[:, 0, 0, 0].tolist())
    ids_held = set(held.images[:, 0, 0, 0].tolist())
    assert not ids_rest & ids_held and len(ids_rest | ids_held) == len(data)
    assert original_class(held) == [held.classes[i] for i in held.labels.tolist()]
    again = split_by_example(data, 0.2, seed=0)[1]
    other = split_by_example(data, 0.2, seed=1)[1]
    assert torch.equal(again.images, held.images)
    assert not torch.equal(other.images, held.images)


def test_split_by_example_keeps_one_on_each_side_at_large_fractions():
    rest, held = split_by_example(make_data([2, 5]), 0.9)
    assert torch.bincount(rest.labels).tolist() == [1, 1]
    assert torch.bincount(held.labels).tolist() == [1, 4]


def test_split_by_example_errors():
    with pytest.raises(ArgumentError, match="fraction must lie strictly between 0 and 1"):
        split_by_example(make_data([3, 3]), 1.0)
    with pytest.raises(DataError, match="every one of the 3 classes has a single example"):
        split_by_example(make_data([1, 1, 1]), 0.5)


def test_split_by_example_holds_out_a_pair_of_every_class_of_four_or_more():
    rest, held = split_by_example(make_data([5, 5, 5]), 0.15)
    assert torch.bincount(held.labels).tolist() == [2, 2, 2]
    assert torch.bincount(rest.labels).tolist() == [3, 3, 3]
    rest, held = split_by_example(make_data([2, 3, 4, 40]), 0.15)
    assert torch.bincount(held.labels).tolist() == [1, 1, 2, 6]
    assert torch.bincount(rest.labels).tolist() == [1, 2, 2, 34]


def test_split_by_example_says_when_no_class_can_hold_out_a_pair():
    with pytest.raises(
        DataError,
        match=r"^test: holding out 0\.15 of each class's examples leaves no class with two "
        r"held-out examples, so no same-class pair to validate on: 2 classes have 3 examples, "
        r"1 class has 2; a class needs 4",
    ):
        split_by_example(make_data([3, 2, 3]), 0.15)


def test_training_on_five_images_per_class_gets_validation_pairs(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for k in range(5):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{k}.png")
    cfg = TrainConfig(data=str(tmp_path), loss="bce", out=str(tmp_path / "run")).resolved()
    data = prepare_data(cfg)
    assert torch.bincount(data.val.labels).tolist() == [2, 2, 2]
    assert torch.bincount(data.train.labels).tolist() == [3, 3, 3]
    left, right, target = fixed_pairs(data.val.labels, 64, seed=1)
    same = data.val.labels[left] == data.val.labels[right]
    assert torch.equal(same, target.bool()) and bool(same.any())
