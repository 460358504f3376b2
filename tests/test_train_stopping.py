"""How long a run trains: the default recipe's budget and early stopping, the plateau
schedule, lengths given by hand, and which arguments a resumed run may change."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siamnet.cli.common import parse_duration
from siamnet.errors import ArgumentError
from siamnet.train import PLATEAU_EPOCHS, RunState, TrainConfig, fit, plateau_scale, stop_reason

SIAMNET = str(Path(sys.executable).parent / "siamnet")
os.environ["SIAMNET_NO_TENSORBOARD"] = "1"


def small(out: Path, **kw) -> TrainConfig:
    values = dict(
        model="seed-cnn",
        loss="proto",
        ways=5,
        queries=2,
        steps_per_epoch=3,
        val_pairs=200,
        val_episodes=50,
        out=str(out),
        quiet=True,
        device="cpu",
    )
    values.update(kw)
    return TrainConfig(**values)


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


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


def test_stop_reason_predicts_an_overrun_before_it_happens():
    cfg = TrainConfig(epochs=10, patience=3, time_budget=100.0)
    assert stop_reason(cfg, RunState(epoch=2, wall_seconds=50.0), 20.0) == ""
    assert stop_reason(cfg, RunState(epoch=2, wall_seconds=85.0), 20.0) == "time budget"
    assert stop_reason(cfg, RunState(epoch=2, epochs_without_improvement=3), 1.0) == (
        "early stopping"
    )
    assert stop_reason(cfg, RunState(epoch=10), 1.0) == "epochs"


def test_plateau_halves_after_each_run_of_epochs_without_improvement():
    scales = [1.0]
    for without in range(1, 3 * PLATEAU_EPOCHS + 1):
        scales.append(plateau_scale(scales[-1], without))
    assert scales[PLATEAU_EPOCHS] == 0.5 and scales[2 * PLATEAU_EPOCHS] == 0.25
    assert scales[PLATEAU_EPOCHS - 1] == 1.0 and plateau_scale(0.5, 0) == 0.5


def test_a_tiny_budget_stops_after_one_epoch(tmp_path):
    summary = fit(small(tmp_path / "run", epochs=50, time_budget=0.01))
    assert summary["epochs_run"] == 1 and summary["stopped_by"] == "time budget"
    assert len(metrics(tmp_path / "run")) == 1


def test_early_stopping_on_a_plateau_with_the_learning_rate_halved(tmp_path):
    """With a zero learning rate nothing improves after the first epoch: the plateau schedule
    halves the rate after PLATEAU_EPOCHS epochs and patience ends the run."""
    patience = PLATEAU_EPOCHS + 1
    run = tmp_path / "run"
    summary = fit(small(run, epochs=20, lr=1e-30, schedule="plateau", patience=patience))
    assert summary["stopped_by"] == "early stopping" and summary["best_epoch"] == 1
    assert summary["epochs_run"] == 1 + patience
    lrs = [float(r["lr"]) for r in metrics(run)]
    assert lrs[PLATEAU_EPOCHS] == pytest.approx(lrs[0])
    assert lrs[PLATEAU_EPOCHS + 1] == pytest.approx(lrs[0] / 2)


def test_parse_duration():
    assert parse_duration("600") == 600 and parse_duration("90s") == 90
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    for bad in ("", "ten", "-5", "5x", "nanm", "inf"):
        with pytest.raises(ArgumentError, match="--time-budget"):
            parse_duration(bad)


def test_resume_refuses_arguments_that_would_change_the_run(tmp_path):
    run = tmp_path / "run"
    fit(small(run, epochs=1))
    with pytest.raises(ArgumentError) as info:
        fit(TrainConfig(resume=str(run), lr=0.5, model="conv4", quiet=True, device="cpu"))
    message = str(info.value)
    assert "--lr 0.5 differs from the run's" in message
    assert "--model conv4 differs from the run's seed-cnn" in message
    assert "\n" not in message
    with pytest.raises(ArgumentError, match="--overwrite"):
        fit(TrainConfig(resume=str(run), overwrite=True, quiet=True))
    with pytest.raises(ArgumentError, match="--out"):
        fit(TrainConfig(resume=str(run), out=str(tmp_path / "elsewhere"), quiet=True))
    # the same values, and the arguments a resumed run may change, are accepted
    summary = fit(TrainConfig(resume=str(run), epochs=2, model="seed-cnn", patience=4, quiet=True))
    assert summary["epochs_run"] == 2


@pytest.mark.slow
def test_cli_resume_with_a_changed_flag_is_one_line(tmp_path):
    run = tmp_path / "run"
    fit(small(run, epochs=1))
    proc = subprocess.run(
        [SIAMNET, "train", "--resume", str(run), "--loss", "bce", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siamnet: error: --resume")
    assert "--loss bce differs from the run's proto" in lines[0]
