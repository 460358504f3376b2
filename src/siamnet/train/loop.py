"""The training loop: `fit` alternates `train_epoch` and `validate`, writing ``last.pt``
every epoch and ``best.pt`` by validation one-shot accuracy, ``metrics.csv`` and ``curves.png``,
until the epochs, the patience or the time budget run out; then `finish` calibrates and tests.
Every random draw comes from seeded generators whose state is checkpointed, so a run resumed
with ``--resume`` ends with the same weights as one that was never stopped (on CPU).
The loop knows no loss names: the objective (`siamnet.objectives`) does."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

import torch
from torch import nn

from siamnet.allocator import keep_freed_memory
from siamnet.checkpoint import save_checkpoint
from siamnet.device import resolve_device
from siamnet.distributed import (
    DistInfo,
    all_true,
    barrier,
    broadcast_buffers,
    broadcast_flag,
    broadcast_float,
    device_for_rank,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from siamnet.fileio import atomic_write_text
from siamnet.objectives import (
    Objective,
    ObjectiveSettings,
    TrainingModel,
    get_objective,
    register_objective,
)
from siamnet.train.config import TrainConfig
from siamnet.train.data import TrainData, prepare_data
from siamnet.train.experiment_log import ExperimentLog
from siamnet.train.model import (
    amp_dtype,
    build_training_model,
    photo_episodes,
    pretrained_weights,
    use_channels_last,
)
from siamnet.train.optim import build_optimizer, plateau_scale, set_epoch_hyperparameters
from siamnet.train.rundir import (
    RunFolder,
    RunState,
    _restore,
    config_for_resume,
    draw_curves,
    metadata_for,
    run_folder,
    training_state,
    write_metrics_csv,
)
from siamnet.train.step import BatchFeed, BatchMaker, train_epoch
from siamnet.train.validation import (
    finish,
    selection_ci,
    selection_score,
    test_pair_accuracy,
    validate,
)


def fit(
    config: TrainConfig | None = None, objective: Objective | None = None, **arguments: Any
) -> dict[str, Any]:
    """Train as `config` (and the keyword `arguments`, which win) say; returns the final
    summary (also written to ``summary.json`` in the run folder).

    ``data`` (and ``test_data``) may be a SPEC, a `LabeledImages`, a pair ``(images, labels)``
    of arrays or a map-style torch ``Dataset``; ``model`` a backbone name or one's own
    ``nn.Module`` (images ``[B, C, H, W]`` to vectors ``[B, D]``). `objective` replaces
    ``config.loss`` with an objective of one's own. Once the data is loaded, the process keeps
    freed memory for reuse (`siamnet.allocator.keep_freed_memory`, glibc only).

    >>> import numpy as np, siamnet
    >>> x = np.random.randint(0, 256, (200, 28, 28), dtype=np.uint8); y = np.arange(200) % 5
    >>> summary = siamnet.fit(data=(x, y), model="seed-cnn", epochs=1, steps_per_epoch=5,
    ...                       out="runs/notebook", overwrite=True)
    >>> model = siamnet.load_checkpoint("runs/notebook")
    """
    config = dataclasses.replace(config or TrainConfig(), **arguments)
    if objective is not None:
        register_objective(objective)
        config = dataclasses.replace(config, loss=objective.name)
    cfg = config_for_resume(config) if config.resume else config.resolved()
    cfg.validate()  # every argument, before anything is read or written
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    device = device_for_rank(device, info)
    # a resumed run keeps its saved episodes; a new one may take the photo recipe's
    episodes_given = bool(config.resume) or config.ways is not None or config.queries is not None
    try:
        return _fit(cfg, device, info, episodes_given)
    finally:
        shutdown(info)


def _fit(
    cfg: TrainConfig, device: torch.device, info: DistInfo, episodes_given: bool = True
) -> dict[str, Any]:
    if cfg.workers > 0:
        torch.set_num_threads(cfg.workers)
    objective = get_objective(cfg.loss)
    weights = pretrained_weights(cfg)
    if weights is not None:  # the run records the file it started from, not "imagenet"
        cfg = dataclasses.replace(cfg, pretrained=str(weights))
    data = prepare_data(cfg)
    cfg = photo_episodes(cfg, data, episodes_given)
    keep_freed_memory()  # after loading, whose parsing garbage is handed back to the OS
    with run_folder(cfg, info) as folder:
        return _train(cfg, device, info, objective, data, folder)


def _train(
    cfg: TrainConfig,
    device: torch.device,
    info: DistInfo,
    objective: Objective,
    data: TrainData,
    folder: RunFolder,
) -> dict[str, Any]:
    run_dir = folder.path
    generators = {
        "sample": torch.Generator().manual_seed(cfg.seed * 1_000_003 + info.rank),
        "augment": torch.Generator().manual_seed(cfg.seed * 1_000_033 + 7 + info.rank),
    }
    model = build_training_model(cfg, data, torch.Generator().manual_seed(cfg.seed), objective)
    own = objective.training_parameters(
        ObjectiveSettings.of(cfg),
        data.train,
        model.backbone.out_dim,
        torch.Generator().manual_seed(cfg.seed + 1),
    )
    model.to(device)
    if own is not None:
        own.to(device)
    if use_channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)  # 4-D weights; activations follow them
    optimizer = build_optimizer(cfg, model, own)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    state = RunState()
    if cfg.resume:
        state = _restore(run_dir / "last.pt", model, optimizer, scaler, generators, device, own)
    log = ExperimentLog(cfg.log if info.is_main else "none", run_dir, state.epoch)
    trainable = TrainingModel(model, own)  # the network and the objective's own parameters
    train_model: nn.Module = trainable
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    labels = data.train.labels.to(device)
    batches = BatchMaker(cfg, data.train, objective)
    feed = BatchFeed(cfg, data.train, batches, generators["sample"], device)
    if info.is_main:
        _announce(cfg, data, device, info, model.spec.model)
    stop = False
    wall_start, wall_before = time.perf_counter(), state.wall_seconds
    while state.epoch < cfg.epochs and not stop:
        epoch = state.epoch
        lr = set_epoch_hyperparameters(
            cfg, optimizer, epoch, state.lr_scale, state.planned_epochs or cfg.epochs
        )
        epoch_start = start = time.perf_counter()
        loss, acc, seen = train_epoch(
            cfg, train_model, optimizer, scaler, feed, labels, generators, epoch, info
        )
        broadcast_buffers(model, info)
        loss = mean_over_ranks(loss, info, device)
        acc = mean_over_ranks(acc, info, device)
        state.seconds += time.perf_counter() - start
        state.images_seen += seen * info.world_size
        state.epoch += 1
        if info.is_main:
            val = validate(cfg, model, data.val, device)
            if data.test is not None and data.test.num_classes >= 2:
                val["test_pair_acc"] = test_pair_accuracy(
                    cfg, model, data.test, device, val["threshold"]
                )
            row = {
                "epoch": epoch + 1,
                "train_loss": loss,
                "train_acc": acc,
                "lr": lr,
                "images_seen": state.images_seen,
                "seconds": round(state.seconds, 2),
                **val,
            }
            state.history.append(row)
            improved = record_validation(cfg, state, val)
            now = time.perf_counter()
            state.wall_seconds = row["wall_seconds"] = wall_before + (now - wall_start)
            if epoch == 0 and not state.planned_epochs:
                state.planned_epochs = planned_epochs(cfg, now - epoch_start)
            state.stopped_by = stop_reason(cfg, state, now - epoch_start)
            extra = {
                "epoch": epoch + 1,
                "threshold": val["threshold"],
                "threshold_source": "best accuracy on validation pairs",
                "validation": val,
            }
            meta = metadata_for(cfg, model, data, objective, extra)
            if improved:
                save_checkpoint(run_dir / "best.pt", model, meta)
            save_checkpoint(
                run_dir / "last.pt",
                model,
                meta,
                training_state(optimizer, scaler, generators, state, own),
            )
            folder.keep_new()  # the new run has a checkpoint: an old one it replaces goes
            write_metrics_csv(run_dir / "metrics.csv", state.history)
            log.epoch(row)
            draw_curves(run_dir, objective)
            if not cfg.quiet:
                print(_epoch_line(row, cfg), file=sys.stderr, flush=True)
            stop = state.stopped_by not in ("", "epochs")
        stop = broadcast_flag(stop, info, device)
        state.lr_scale = broadcast_float(state.lr_scale, info, device)
        state.planned_epochs = round(broadcast_float(state.planned_epochs, info, device))
    if info.is_main:
        log.close(run_dir / "metrics.csv")
    in_sync = ranks_in_sync(trainable, info, device)
    barrier(info)
    if not info.is_main:
        return {}
    summary = finish(cfg, data, run_dir, device, state)
    if info.enabled:
        summary.update(world_size=info.world_size, ranks_in_sync=in_sync)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def record_validation(cfg: TrainConfig, state: RunState, val: dict[str, Any]) -> bool:
    """Book an epoch's validation: a better score makes the epoch the best (returns True, and
    ``best.pt`` is written); early stopping and the plateau schedule count only epochs that
    beat the score of the last counted improvement by more than this measurement's 95%
    confidence interval, so that they follow learning, not the noise of the episodes."""
    score, ci = selection_score(val), selection_ci(val)
    improved = score > state.best_score
    if improved:
        state.best_score, state.best_epoch = score, state.epoch
    if score > state.reference_score + ci:
        state.reference_score = score
        state.epochs_without_improvement = 0
    else:
        state.epochs_without_improvement += 1
        if cfg.schedule == "plateau":
            state.lr_scale = plateau_scale(state.lr_scale, state.epochs_without_improvement)
    return improved


def planned_epochs(cfg: TrainConfig, first_epoch_seconds: float) -> int:
    """With ``--schedule cosine`` and a time budget, the run's length in epochs, planned from
    the first epoch's wall time (training, validation, checkpoints) so that the schedule decays
    over the budget and the run spends it; capped at ``--epochs``. 0: no plan (the length is
    ``--epochs``). Recorded in ``last.pt``, so a resumed run keeps the same plan."""
    if not cfg.time_budget or cfg.schedule != "cosine":
        return 0
    fitting = int(cfg.time_budget // max(first_epoch_seconds, 1e-9))
    return max(1, min(cfg.epochs, fitting))


def stop_reason(cfg: TrainConfig, state: RunState, last_epoch_seconds: float) -> str:
    """Why the run ends after this epoch (``""``: it goes on). ``time budget`` when one more
    epoch as long as the last would overrun ``cfg.time_budget`` seconds of wall time."""
    if state.epoch >= cfg.epochs:
        return "epochs"
    if state.planned_epochs and state.epoch >= state.planned_epochs:
        return "planned length"
    if cfg.patience and state.epochs_without_improvement >= cfg.patience:
        return "early stopping"
    if cfg.time_budget and state.wall_seconds + last_epoch_seconds > cfg.time_budget:
        return "time budget"
    return ""


@torch.no_grad()
def ranks_in_sync(model: nn.Module, info: DistInfo, device: torch.device) -> bool:
    """Whether every rank holds exactly rank 0's weights (the network's and the objective's
    own: a check that DDP did its job)."""
    if not info.enabled:
        return True
    import torch.distributed as dist

    flat = torch.cat([t.detach().float().flatten() for t in model.state_dict().values()]).to(device)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    return all_true(bool(torch.equal(flat, reference)), info, device)


def _announce(
    cfg: TrainConfig, data: TrainData, device: torch.device, info: DistInfo, model: str
) -> None:
    """The run's first line on stderr; `model` is the backbone as built (the default recipe's
    conv4-map is conv4-pool on photographs)."""
    if cfg.quiet:
        return
    unseen = f", {data.unseen.num_classes} unseen classes held out" if data.unseen else ""
    print(
        f"training {model}/{cfg.loss} on {data_label(cfg, data)}: "
        f"{len(data.train)} images of "
        f"{data.train.num_classes} classes{unseen}; validation: {data.val_protocol}; "
        f"device {device}"
        + (f" × {info.world_size} processes" if info.enabled else "")
        + (
            f"; images read from disk per batch by {cfg.loader_workers} loader workers"
            if data.train.streamed
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )


def data_label(cfg: TrainConfig, data: TrainData) -> str:
    return cfg.data if isinstance(cfg.data, str) else data.train.source or "in-memory data"


def _epoch_line(row: dict[str, Any], cfg: TrainConfig) -> str:
    ways = row.get("val_oneshot_ways", 0)
    budget = f" of {cfg.time_budget:.0f}s budget" if cfg.time_budget else ""
    oneshot = f"val {ways}-way one-shot {row['val_oneshot_acc']:.3f}, " if ways else ""
    return (
        f"epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.4f}, train acc "
        f"{row['train_acc']:.3f}, val pair acc {row['val_pair_acc']:.3f}, "
        f"{oneshot}lr {row['lr']:.2g} "
        f"({row['seconds']:.0f}s training, {row.get('wall_seconds', 0):.0f}s{budget})"
    )
