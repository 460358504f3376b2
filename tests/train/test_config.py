"""Training arguments filled from the preset: the default recipe's budget and patience, and a
length given by hand."""

from __future__ import annotations

from siamnet.train import TrainConfig


def test_default_recipe_trains_to_a_plateau_within_a_budget():
    cfg = TrainConfig().resolved()
    assert cfg.time_budget == 600 and cfg.patience > 0 and cfg.schedule == "plateau"
    assert cfg.epochs >= 50  # a cap, not the length


def test_a_length_given_by_hand_is_the_length():
    cfg = TrainConfig(epochs=3).resolved()
    assert (cfg.epochs, cfg.time_budget, cfg.patience) == (3, 0, 0)
    cfg = TrainConfig(steps_per_epoch=7, time_budget=30, patience=2).resolved()
    assert (cfg.steps_per_epoch, cfg.time_budget, cfg.patience) == (7, 30, 2)
    assert TrainConfig(preset="seed").resolved().time_budget == 0
