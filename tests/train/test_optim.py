"""The optimiser's schedule: learning-rate factors per epoch and the plateau schedule's halving."""

from __future__ import annotations

import pytest

from siamnet.train import PLATEAU_EPOCHS, lr_factor, plateau_scale


def test_lr_schedules():
    assert lr_factor("none", 3, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("step", 6, 10) == pytest.approx(0.1)
    assert lr_factor("exp:0.99", 2, 10) == pytest.approx(0.9801)


def test_plateau_halves_after_each_run_of_epochs_without_improvement():
    scales = [1.0]
    for without in range(1, 3 * PLATEAU_EPOCHS + 1):
        scales.append(plateau_scale(scales[-1], without))
    assert scales[PLATEAU_EPOCHS] == 0.5 and scales[2 * PLATEAU_EPOCHS] == 0.25
    assert scales[PLATEAU_EPOCHS - 1] == 1.0 and plateau_scale(0.5, 0) == 0.5
