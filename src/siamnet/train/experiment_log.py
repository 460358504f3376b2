"""Experiment logging (``--log tensorboard``): one TensorBoard writer per run, in
``RUN/tensorboard``, with every numeric column of ``metrics.csv`` per epoch and the training
curves figure at the end. ``--log none`` (the default) writes nothing beyond the run folder's
own files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from siamnet.errors import ArgumentError

#: ``--log`` values with the package each needs.
LOGGERS = {"none": None, "tensorboard": "tensorboard"}


def check_logger(name: str) -> None:
    """Refuse, before anything is written, a logger whose package is not installed."""
    package = LOGGERS.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ArgumentError(
            f"--log {name}: the {package} package is not installed "
            f"(pip install 'siamnet[{package}]')"
        )


class ExperimentLog:
    """Scalars per epoch and figures to TensorBoard, through one writer opened with the run
    (a resumed run appends, dropping what a killed run logged past its last checkpoint)."""

    def __init__(self, name: str, run_dir: Path, resume_epoch: int = 0) -> None:
        self.writer = None
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_epoch + 1)

    def epoch(self, row: dict[str, Any]) -> None:
        """Every number of one epoch's metrics row, at step ``row["epoch"]``."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self, metrics_csv: Path | None = None) -> None:
        """Add the training curves drawn from `metrics_csv` (when given) and close."""
        if self.writer is None:
            return
        if metrics_csv is not None and metrics_csv.exists():
            from siamnet.plots.curves import plot_training_curves

            self.writer.add_figure("curves", plot_training_curves(metrics_csv))
        self.writer.close()
        self.writer = None
