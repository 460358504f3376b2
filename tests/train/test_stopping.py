"""How long a run trains: why it stops (epochs, patience, the time budget), early stopping with
the plateau schedule, and which arguments a resumed run may change."""

from __future__ import annotations

import csv
import math
import os
import subprocess
from pathlib import Path

import pytest

from siamnet.errors import ArgumentError
from siamnet.train import PLATEAU_EPOCHS, RunState, TrainConfig, fit, stop_reason

from helpers import SIAMNET


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


def test_stop_reason_predicts_an_overrun_before_it_happens():
    cfg = TrainConfig(epochs=10, patience=3, time_budget=100.0)
    assert stop_reason(cfg, RunState(epoch=2, wall_seconds=50.0), 20.0) == ""
    assert stop_reason(cfg, RunState(epoch=2, wall_seconds=85.0), 20.0) == "time budget"
    assert stop_reason(cfg, RunState(epoch=2, epochs_without_improvement=3), 1.0) == (
        "early stopping"
    )
    assert stop_reason(cfg, RunState(epoch=10), 1.0) == "epochs"


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


def test_patience_counts_only_improvements_beyond_the_confidence_interval():
    from siamnet.train.loop import record_validation

    cfg = TrainConfig(schedule="plateau").resolved()
    state = RunState(epoch=1)

    def epoch(acc: float, ci: float = 0.02) -> bool:
        state.epoch += 1
        val = {"val_oneshot_acc": acc, "val_oneshot_ci95": ci, "selected_by": "one-shot"}
        return record_validation(cfg, state, {**val, "val_pair_acc": 0.5})

    assert epoch(0.80) and state.epochs_without_improvement == 0
    assert epoch(0.81) and state.best_score == 0.81  # a better best.pt ...
    assert state.epochs_without_improvement == 1  # ... but within the noise for patience
    assert not epoch(0.805) and state.epochs_without_improvement == 2
    assert state.lr_scale == 0.5  # the plateau schedule halves on the counted epochs
    assert epoch(0.83) and state.epochs_without_improvement == 0  # beyond 0.80 + 0.02


def test_a_budgeted_cosine_run_plans_its_length_and_spends_the_budget(tmp_path):
    from siamnet.train.loop import planned_epochs

    cfg = TrainConfig(schedule="cosine", time_budget=100.0, epochs=40).resolved()
    assert planned_epochs(cfg, 8.0) == 12 and planned_epochs(cfg, 1.0) == 40
    assert planned_epochs(cfg, 500.0) == 1
    assert planned_epochs(TrainConfig(schedule="plateau", time_budget=100.0).resolved(), 8) == 0
    run = tmp_path / "run"
    # a budget of 4 epochs of about a second: the plan is the --epochs cap, and the schedule
    # decays over the planned length (an epoch slower than 5 s would shorten the plan)
    summary = fit(small(run, epochs=4, schedule="cosine", time_budget=20.0))
    assert summary["stopped_by"] in ("planned length", "epochs")
    assert summary["epochs_run"] == summary["planned_epochs"] == 4
    lrs = [float(r["lr"]) for r in metrics(run)]
    expected = [lrs[0] * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-4)  # metrics.csv keeps 6 digits
