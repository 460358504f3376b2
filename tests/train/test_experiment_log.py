"""``--log tensorboard``: one writer per run, every epoch's metrics as scalars, the curves as a
figure at the end; a missing package is refused before anything is written."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from siamnet.errors import ArgumentError
from siamnet.train import TrainConfig, fit
from siamnet.train.experiment_log import LOGGERS, check_logger


def small(out, **kw) -> TrainConfig:
    values = dict(
        model="seed-cnn",
        loss="contrastive",
        epochs=3,
        steps_per_epoch=4,
        batch_size=16,
        val_pairs=100,
        val_episodes=10,
        out=str(out),
        quiet=True,
        device="cpu",
    )
    return TrainConfig(**{**values, **kw})


def test_tensorboard_gets_each_epoch_once_and_the_curves(tmp_path):
    fit(small(tmp_path / "run", log="tensorboard"))
    files = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1  # one writer for the whole run
    events = EventAccumulator(str(files[0]), size_guidance={"images": 0}).Reload()
    for tag in ("train_loss", "val_pair_acc", "lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert "curves" in events.Tags()["images"]


def test_no_log_by_default_and_a_missing_package_is_refused(tmp_path, monkeypatch):
    fit(small(tmp_path / "plain", epochs=1))
    assert not (tmp_path / "plain" / "tensorboard").exists()
    monkeypatch.setitem(LOGGERS, "tensorboard", "no_such_package_here")
    with pytest.raises(ArgumentError, match="--log tensorboard: the no_such_package_here"):
        check_logger("tensorboard")
