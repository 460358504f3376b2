"""Choosing the examples to evaluate and calibrate on: unseen classes first, then the test split;
the validation split that training held out."""

from __future__ import annotations

import pytest
import torch

from siamnet.data.registry import load_dataset
from siamnet.errors import DataError
from siamnet.evaluate import evaluation_data, merge_splits, validation_data
from siamnet.train import TrainConfig, prepare_data

from helpers import DIGITS_UNSEEN, digits_metadata


def test_evaluation_data_prefers_unseen_classes_then_the_test_split():
    dataset = load_dataset("digits")
    meta = digits_metadata(["0", "1", "2", "3", "4", "5"], eval_classes=DIGITS_UNSEEN)
    chosen = evaluation_data(dataset, meta)
    everything = merge_splits(dataset)
    assert chosen.unseen and chosen.data.classes == DIGITS_UNSEEN
    assert len(chosen.data) == int(torch.isin(everything.labels, torch.tensor([6, 7, 8, 9])).sum())
    seen = evaluation_data(dataset, digits_metadata([str(i) for i in range(10)]))
    assert not seen.unseen and "'test' split" in seen.description
    assert len(seen.data) == len(dataset.test)
    given = evaluation_data(dataset, meta, ["1", "8"])
    assert given.data.classes == ["1", "8"] and not given.unseen and given.notes
    with pytest.raises(DataError, match="'x'"):
        evaluation_data(dataset, meta, ["6", "x"])


def test_validation_data_is_the_split_training_held_out():
    cfg = TrainConfig(data="digits", eval_classes=DIGITS_UNSEEN, seed=3).resolved()
    trained = prepare_data(cfg)
    meta = digits_metadata(trained.train.classes, **cfg.to_json())
    val = validation_data(load_dataset("digits"), meta)
    assert val is not None and torch.equal(val.data.images, trained.val.images)
    assert torch.equal(val.data.labels, trained.val.labels)
    # data the checkpoint was not trained on gives no validation split
    other = digits_metadata(["a", "b"], seed=3)
    assert validation_data(load_dataset("digits"), other) is None
