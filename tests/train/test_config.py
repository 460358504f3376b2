"""Training arguments filled from the preset: the default recipe's budget and patience, and a
length given by hand."""

from __future__ import annotations

import torch

from siamnet.objectives import OBJECTIVES
from siamnet.train import TrainConfig, prepare_data


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


def test_default_episodes_are_wider_than_the_test_and_a_given_width_wins(tmp_path):
    """60-way training episodes in the default recipe (Snell et al.'s Omniglot choice), capped
    at the training classes; other presets and a given --ways keep theirs."""
    assert TrainConfig().resolved().ways == 60
    assert TrainConfig(ways=5).resolved().ways == 5
    assert TrainConfig(preset="koch").resolved().ways == 20
    cfg = TrainConfig(out=str(tmp_path / "a")).resolved()
    data = prepare_data(cfg)
    draw = OBJECTIVES["proto"].sampler(cfg, data.train)
    batch = draw(torch.Generator().manual_seed(0))
    assert int(batch["support_labels"].max()) + 1 == data.train.num_classes == 6


def test_rotated_classes_by_default_only_where_there_are_many_classes(tmp_path):
    """The default recipe adds rotated classes to data with at least 20 training classes
    (where validation holds out classes), not to the digits' six or eight."""
    few = prepare_data(TrainConfig(out=str(tmp_path / "a")).resolved())
    assert few.train.num_classes == 6 and few.val_protocol.startswith("held-out examples")
    forced = prepare_data(TrainConfig(eval_classes=["8", "9"], rotate_classes=True).resolved())
    assert forced.train.num_classes == 4 * 8
    auto = TrainConfig(eval_classes=["8", "9"]).resolved()
    assert auto.rotate_classes == "auto" and prepare_data(auto).train.num_classes == 8


def test_the_fast_preset_pairs_every_image_of_its_batches_and_other_presets_do_not():
    fast = TrainConfig(preset="fast").resolved()
    assert (fast.model, fast.loss, fast.pairs, fast.examples_per_class) == (
        "seed-cnn",
        "bce",
        "batch",
        10,
    )
    assert fast.rotate_classes is False and fast.time_budget == 0
    for preset in (None, "seed", "koch"):
        cfg = TrainConfig(preset=preset).resolved()
        assert cfg.pairs == "sampled" and cfg.examples_per_class == 4
    assert TrainConfig(preset="fast", examples_per_class=5).resolved().examples_per_class == 5


def test_automatic_mixed_precision_follows_the_device_and_the_cpu(monkeypatch):
    import torch

    from siamnet.train import model as train_model

    cpu, mps = torch.device("cpu"), torch.device("mps")
    auto, off = TrainConfig().resolved(), TrainConfig(amp="off").resolved()
    monkeypatch.setattr(train_model, "cpu_has_fast_bf16", lambda: True)
    assert train_model.amp_dtype(auto, cpu) is torch.bfloat16
    assert train_model.amp_dtype(off, cpu) is None
    assert train_model.amp_dtype(auto, mps) is None
    monkeypatch.setattr(train_model, "cpu_has_fast_bf16", lambda: False)
    assert train_model.amp_dtype(auto, cpu) is None
    assert train_model.amp_dtype(TrainConfig(amp="bf16").resolved(), cpu) is torch.bfloat16
