"""The run folder: ``metrics.csv``, ``curves.png``, checkpoints' metadata and training state,
``--overwrite`` and ``--resume`` (what a resumed run may change)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.checkpoint import load_checkpoint, read_checkpoint_payload
from siamnet.distributed import DistInfo, barrier
from siamnet.errors import ArgumentError
from siamnet.fileio import atomic_write_text, remove_stale_temps
from siamnet.models.siamese import SiameseNet
from siamnet.objectives import Objective, get_objective
from siamnet.train.config import TrainConfig, TrainingError
from siamnet.train.data import TrainData


@dataclass
class RunState:
    """What a resumed run needs besides weights and optimizer state."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    images_seen: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    lr_scale: float = 1.0
    stopped_by: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_pair_acc",
    "val_auc",
    "val_oneshot_acc",
    "val_oneshot_ways",
    "test_pair_acc",
    "lr",
    "images_seen",
    "seconds",
]


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The whole history, rewritten atomically (so a killed run never leaves half a line)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def draw_curves(run_dir: Path, loss: str | Objective | None = None) -> None:
    """Redraw ``curves.png`` from ``metrics.csv`` (skipped if plotting is unavailable)."""
    try:
        from siamnet.plots.curves import plot_training_curves
    except ImportError:
        return
    label = get_objective(loss).accuracy_label if loss is not None else None
    plot_training_curves(run_dir / "metrics.csv", run_dir / "curves.png", accuracy_label=label)


def metadata_for(
    cfg: TrainConfig, model: SiameseNet, data: TrainData, extra: dict[str, Any]
) -> dict[str, Any]:
    """A checkpoint's metadata; `extra` holds the epoch, the threshold and validation."""
    fixed = model.head.default_threshold
    return {
        "siamnet_version": __version__,
        "model_spec": model.spec.to_dict(),
        "classes": data.train.classes,
        "unseen_classes": data.unseen.classes if data.unseen is not None else [],
        "threshold": extra.get("threshold", fixed[0] if fixed else -cfg.margin / 2),
        "threshold_source": extra.get("threshold_source", "default"),
        "val_protocol": data.val_protocol,
        "training_args": cfg.to_json(),
        **{k: v for k, v in extra.items() if k not in ("threshold", "threshold_source")},
    }


def training_state(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    generators: dict[str, torch.Generator],
    state: RunState,
) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "generators": {k: g.get_state() for k, g in generators.items()},
        "torch_rng": torch.get_rng_state(),
        "run_state": json.dumps(dataclasses.asdict(state)),
    }


#: The files a run folder holds that training rewrites (atomically, through temporaries).
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "curves.png", "summary.json")


def prepare_run_dir(cfg: TrainConfig, info: DistInfo) -> Path:
    """Create the run folder; refuse to overwrite one that has files unless ``--overwrite``."""
    run_dir = Path(cfg.out)
    if cfg.resume:
        if info.is_main:  # temporaries of a writer killed mid-write (never the live files)
            remove_stale_temps(run_dir, unmarked_for=RUN_FILES)
        barrier(info)
        return run_dir
    if info.is_main:
        if run_dir.exists() and any(run_dir.iterdir()):
            if not cfg.overwrite:
                raise ArgumentError(
                    f"--out {run_dir}: folder exists and is not empty; pass --overwrite to replace "
                    f"it or --resume {run_dir} to continue it"
                )
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    return run_dir


#: What ``--resume`` may change: how much longer the run goes on, and where and how quietly
#: it runs. Everything else is the run's own and a differing value is refused.
RESUME_MAY_CHANGE = ("epochs", "time_budget", "patience", "device", "workers", "quiet")


def config_for_resume(cfg: TrainConfig) -> TrainConfig:
    """The stored training arguments of ``--resume DIR``, with the few that may change
    (`RESUME_MAY_CHANGE`) taken from `cfg`; any other argument of `cfg` that was given (differs
    from its default) and differs from the stored value is refused with one line."""
    last = Path(cfg.resume) / "last.pt"
    if not last.is_file():
        raise TrainingError(f"--resume {cfg.resume}: no last.pt in that folder to continue from")
    stored = dict(read_checkpoint_payload(last)["metadata"]["training_args"])
    stored["image_size"] = tuple(stored["image_size"]) if stored.get("image_size") else None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    resumed = TrainConfig(**{k: v for k, v in stored.items() if k in known})
    conflicts = resume_conflicts(cfg, resumed)
    if conflicts:
        raise ArgumentError(
            f"--resume {cfg.resume}: {'; '.join(conflicts)}; a resumed run keeps its training "
            f"arguments (only --{', --'.join(n.replace('_', '-') for n in RESUME_MAY_CHANGE)} "
            "may change): start a new run with --out to change them"
        )
    resumed.resume, resumed.out = cfg.resume, cfg.resume
    for name in RESUME_MAY_CHANGE:
        given = getattr(cfg, name)
        if given is not None and given != getattr(TrainConfig, name, None):
            setattr(resumed, name, given)
    resumed.device, resumed.quiet = cfg.device, cfg.quiet
    return resumed


def resume_conflicts(given: TrainConfig, stored: TrainConfig) -> list[str]:
    """``--flag VALUE differs from the run's STORED`` for each argument of `given` that was set
    (differs from the dataclass default) and differs from `stored`."""
    defaults = TrainConfig()
    out = []
    if given.overwrite:
        out.append("--overwrite cannot be combined with it")
    if given.out != defaults.out and Path(given.out).resolve() != Path(given.resume).resolve():
        out.append(f"--out {given.out} differs from the run's own folder")
    skip = {*RESUME_MAY_CHANGE, "resume", "out", "overwrite", "extra"}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(given, f.name)
        if f.name in skip or value is None or value == getattr(defaults, f.name):
            continue
        if value != getattr(stored, f.name):
            flag = "--" + f.name.replace("_", "-")
            shown = ",".join(value) if isinstance(value, list) else value
            out.append(f"{flag} {shown} differs from the run's {getattr(stored, f.name)}")
    return out


def _restore(path, model, optimizer, scaler, generators, device) -> RunState:
    ckpt = load_checkpoint(path, device=device, model=model)
    training = ckpt.training
    if not training:
        raise TrainingError(f"{path}: holds no training state to resume from")
    optimizer.load_state_dict(training["optimizer"])
    if scaler is not None and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    for name, g in generators.items():
        g.set_state(training["generators"][name])
    torch.set_rng_state(training["torch_rng"])
    return RunState(**json.loads(training["run_state"]))


def _log_tensorboard(run_dir: Path, row: dict[str, Any]) -> None:
    if os.environ.get("SIAMNET_NO_TENSORBOARD"):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, row["epoch"])
