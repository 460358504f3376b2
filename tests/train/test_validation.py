"""Validation after an epoch: where no one-shot episode is possible, the best epoch is chosen
by pair accuracy under its own name, never by pair accuracy filed as one-shot accuracy."""

from __future__ import annotations

import torch

from siamnet.data.labeled import LabeledImages
from siamnet.models.siamese import ModelSpec, build_model
from siamnet.train import TrainConfig
from siamnet.train.validation import selection_score, validate


def small_val(counts: list[int]) -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.randint(0, 256, (len(labels), 1, 28, 28), dtype=torch.uint8, generator=g)
    return LabeledImages(images, labels, [str(c) for c in range(len(counts))])


def test_the_best_epoch_is_chosen_by_what_was_measured():
    torch.manual_seed(0)
    model = build_model(ModelSpec(model="seed-cnn", loss="contrastive", head="euclidean"))
    cfg = TrainConfig(val_pairs=50, val_episodes=10).resolved()
    cpu = torch.device("cpu")
    episodes = validate(cfg, model.eval(), small_val([3, 3, 3]), cpu)
    assert episodes["selected_by"] == "one-shot" and episodes["val_oneshot_ways"] == 3
    assert selection_score(episodes) == episodes["val_oneshot_acc"]
    no_episode = validate(cfg, model, small_val([3, 1]), cpu)  # one class with 2 examples
    assert no_episode["selected_by"] == "pairs" and no_episode["val_oneshot_ways"] == 0
    assert "val_oneshot_acc" not in no_episode
    assert selection_score(no_episode) == no_episode["val_pair_acc"]
