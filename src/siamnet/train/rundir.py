"""The run folder: ``metrics.csv``, ``curves.png``, checkpoints' metadata and training state,
``--overwrite`` and ``--resume`` (what a resumed run may change)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamnet import __version__
from siamnet.checkpoint import load_checkpoint, read_checkpoint_payload
from siamnet.distributed import DistInfo, barrier
from siamnet.errors import ArgumentError
from siamnet.fileio import atomic_write_text
from siamnet.models.siamese import SiameseNet
from siamnet.objectives import Objective
from siamnet.outpaths import check_output_dir
from siamnet.temps import remove_stale_temps
from siamnet.train.checks import flag
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
    #: the score of the last improvement beyond its confidence interval (early stopping)
    reference_score: float = -1.0
    #: the length planned from the first epoch's time (`loop.planned_epochs`); 0: none
    planned_epochs: int = 0
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


def draw_curves(run_dir: Path, objective: Objective) -> None:
    """Redraw ``curves.png`` from ``metrics.csv`` (skipped if plotting is unavailable)."""
    try:
        from siamnet.plots.curves import plot_training_curves
    except ImportError:
        return
    plot_training_curves(
        run_dir / "metrics.csv", run_dir / "curves.png", accuracy_label=objective.accuracy_label
    )


def metadata_for(
    cfg: TrainConfig,
    model: SiameseNet,
    data: TrainData,
    objective: Objective,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A checkpoint's metadata; `extra` holds the epoch, the threshold and validation. The
    head's fixed threshold, or the one the objective sets for its distance, is recorded as
    ``default_threshold`` so that inference never needs the objective."""
    fixed = model.head.default_threshold or objective.default_threshold(cfg.margin)
    return {
        "siamnet_version": __version__,
        "model_spec": model.spec.to_dict(),
        "classes": data.train.classes,
        "unseen_classes": data.unseen.classes if data.unseen is not None else [],
        "default_threshold": list(fixed) if fixed else None,
        "threshold": extra["threshold"],
        "threshold_source": extra["threshold_source"],
        "val_protocol": data.val_protocol,
        "training_args": cfg.to_json(),
        **{k: v for k, v in extra.items() if k not in ("threshold", "threshold_source")},
    }


def training_state(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    generators: dict[str, torch.Generator],
    state: RunState,
    objective_parameters: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """What ``last.pt`` holds besides the model to resume exactly: optimiser, scaler, random
    states, the run's counters and the objective's own parameters (class proxies)."""
    own = objective_parameters
    return {
        "objective_parameters": own.state_dict() if own is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "generators": {k: g.get_state() for k, g in generators.items()},
        "torch_rng": torch.get_rng_state(),
        "run_state": json.dumps(dataclasses.asdict(state)),
    }


#: The files a run folder holds that training rewrites (atomically, through temporaries).
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "curves.png", "summary.json")
#: What else a run folder may hold: TensorBoard's logs, and ``evaluate --figures`` put inside.
RUN_EXTRAS = ("tensorboard", "figures")


def check_run_dir(cfg: TrainConfig) -> None:
    """Refuse an ``--out`` folder that training could not use or must not replace, before
    anything is written: a file, a folder above (or equal to) the current one, a non-empty
    folder without ``--overwrite``, or with it one that is not a siamnet run folder."""
    if cfg.resume:
        return
    run_dir = Path(cfg.out)
    check_output_dir(run_dir, "--out")
    if run_dir.is_symlink():
        raise ArgumentError(f"--out {run_dir}: is a symbolic link; give the folder itself")
    here = Path.cwd().resolve()
    if run_dir.resolve() == here or run_dir.resolve() in here.parents:
        raise ArgumentError(
            f"--out {run_dir}: the current folder or one above it cannot be a run folder"
        )
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not cfg.overwrite:
        raise ArgumentError(
            f"--out {run_dir}: folder exists and is not empty; pass --overwrite to replace "
            f"it or --resume {run_dir} to continue it"
        )
    foreign = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name not in RUN_FILES + RUN_EXTRAS and not p.name.startswith(".")
    )
    if foreign or not any((run_dir / name).exists() for name in RUN_FILES):
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ArgumentError(
            f"--out {run_dir}: not a siamnet run folder"
            + (f" (it holds {shown})" if foreign else "")
            + "; --overwrite replaces only run folders: choose another --out"
        )


class RunFolder:
    """The run folder of a new run. With ``--overwrite`` the old run is moved aside, not
    deleted, until the new run has written its first checkpoint (`keep_new`); a run that
    fails before that puts the old one back (`restore_old`)."""

    def __init__(self, path: Path, replaced: Path | None) -> None:
        self.path = path
        self.replaced = replaced

    def keep_new(self) -> None:
        """The new run has something to show: delete the old one for good."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def restore_old(self) -> None:
        """The new run failed before its first checkpoint: put the old run back."""
        if self.replaced is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(self.replaced, self.path)
            self.replaced = None


@contextlib.contextmanager
def run_folder(cfg: TrainConfig, info: DistInfo) -> Iterator[RunFolder]:
    """Prepare the run folder (`prepare_run_dir`) for the training inside the block; an old
    run it replaces comes back if the block fails before `RunFolder.keep_new`."""
    folder = prepare_run_dir(cfg, info)
    try:
        yield folder
    except BaseException:
        if info.is_main:
            folder.restore_old()
        raise
    if info.is_main:
        folder.keep_new()


def prepare_run_dir(cfg: TrainConfig, info: DistInfo) -> RunFolder:
    """Create the run folder, moving an old run aside with ``--overwrite`` (checked by
    `check_run_dir` first); on ``--resume``, clear temporaries of a writer killed mid-write."""
    run_dir = Path(cfg.out)
    replaced = None
    if cfg.resume:
        if info.is_main:  # temporaries of a writer killed mid-write (never the live files)
            remove_stale_temps(run_dir)
        barrier(info)
        return RunFolder(run_dir, None)
    if info.is_main:
        check_run_dir(cfg)
        if run_dir.is_dir() and any(run_dir.iterdir()):
            replaced = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
            os.replace(run_dir, replaced)
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    return RunFolder(run_dir, replaced)


#: What ``--resume`` may change: how much longer the run goes on, and where and how quietly
#: it runs. Everything else is the run's own and a differing value is refused.
RESUME_MAY_CHANGE = (
    "epochs",
    "time_budget",
    "patience",
    "device",
    "workers",
    "loader_workers",
    "cache",
    "quiet",
    "log",
)


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
    for name, value in cfg.given().items():
        if name in RESUME_MAY_CHANGE:
            setattr(resumed, name, value)
    resumed.quiet = cfg.quiet
    return resumed.resolved()


def resume_conflicts(given: TrainConfig, stored: TrainConfig) -> list[str]:
    """``--flag VALUE differs from the run's STORED`` for each argument given in `given`
    (`TrainConfig.given`) that differs from the run's stored, resolved value."""
    out = []
    if given.overwrite:
        out.append("--overwrite cannot be combined with it")
    if given.out is not None and Path(given.out).resolve() != Path(given.resume).resolve():
        out.append(f"--out {given.out} differs from the run's own folder")
    skip = {*RESUME_MAY_CHANGE, "resume", "out", "overwrite"}
    for name, value in given.given().items():
        if name in skip or value == getattr(stored, name):
            continue
        shown = ",".join(value) if isinstance(value, list) else value
        out.append(f"{flag(name)} {shown} differs from the run's {getattr(stored, name)}")
    return out


def _restore(path, model, optimizer, scaler, generators, device, own=None) -> RunState:
    ckpt = load_checkpoint(path, device=device, model=model)
    training = ckpt.training
    if not training:
        raise TrainingError(f"{path}: holds no training state to resume from")
    if own is not None:
        if not training.get("objective_parameters"):
            raise TrainingError(f"{path}: holds no class proxies to resume this objective from")
        own.load_state_dict(training["objective_parameters"])
    optimizer.load_state_dict(training["optimizer"])
    if scaler is not None and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    for name, g in generators.items():
        g.set_state(training["generators"][name])
    torch.set_rng_state(training["torch_rng"])
    return RunState(**json.loads(training["run_state"]))
