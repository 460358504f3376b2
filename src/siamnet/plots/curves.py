"""Training curves from a run's ``metrics.csv``: loss, pair accuracy, one-shot accuracy."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from siamnet.errors import DataError
from siamnet.plots._common import save_figure, subplots


def read_metrics(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Columns of ``metrics.csv`` as float lists (empty cells become NaN)."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"{p}: cannot read metrics ({exc.strerror})") from exc
    if not rows:
        raise DataError(f"{p}: no epochs recorded yet")
    columns: dict[str, list[float]] = {}
    for key in rows[0]:
        columns[key] = [
            float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows
        ]
    return columns


def plot_training_curves(
    metrics_csv: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    loss: str | None = None,
    accuracy_label: str | None = None,
) -> Figure:
    """Three panels per epoch: training loss; accuracy (train batches or episodes, and
    validation pairs); one-shot accuracy on validation data. Written atomically to `out`.

    The training accuracy is labelled `accuracy_label`, else by the objective named `loss`."""
    m = read_metrics(metrics_csv)
    epochs = m["epoch"]
    fig, axes = subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(epochs, m["train_loss"], marker="o", color="tab:blue")
    axes[0].set_title("training loss")
    from siamnet.objectives import OBJECTIVES  # only to name a run's training accuracy

    train_label = accuracy_label or (
        OBJECTIVES[loss].accuracy_label if loss in OBJECTIVES else "train batches"
    )
    axes[1].plot(epochs, m["train_acc"], marker="o", label=train_label)
    axes[1].plot(epochs, m["val_pair_acc"], marker="s", label="validation pairs")
    axes[1].set_title("accuracy")
    axes[1].legend(loc="lower right")
    ways = int(max(m.get("val_oneshot_ways", [0]) or [0]))
    chosen = m["val_oneshot_acc"] if ways else m["val_pair_acc"]  # no episode possible: pairs
    axes[2].plot(epochs, chosen, marker="o", color="tab:green")
    axes[2].set_title(
        f"validation {ways}-way one-shot accuracy" if ways else "validation pair accuracy"
    )
    if ways:
        axes[2].axhline(1.0 / ways, color="grey", linestyle=":", label="chance")
        axes[2].legend(loc="lower right")
    for ax in axes:
        if len(epochs) <= 12:  # a tick per epoch; no fractional epochs for short runs
            ax.set_xticks(epochs)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        ax.set_ylim(0, 1.02)
    return save_figure(fig, out)
