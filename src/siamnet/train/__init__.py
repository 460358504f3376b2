"""Training a Siamese network.

`fit(config)` loads the data (`data`), builds the model for the objective (`model`,
`siamnet.objectives`), then alternates `train_epoch` (`step`) and `validate` (`validation`),
writing the run folder (`rundir`); the optimiser and its schedule are in `optim`, the loop in
`loop`, the arguments in `config`. Everything is re-exported here.
"""

from __future__ import annotations

from siamnet.train.config import TrainConfig, TrainingError
from siamnet.train.data import TrainData, normalization_for, prepare_data
from siamnet.train.loop import fit, ranks_in_sync, stop_reason
from siamnet.train.model import (
    amp_dtype,
    autocast_context,
    build_training_model,
    pretrained_weights,
    use_channels_last,
)
from siamnet.train.optim import (
    KOCH_LAYERS,
    PLATEAU_EPOCHS,
    build_optimizer,
    lr_factor,
    parameter_groups,
    plateau_scale,
    set_epoch_hyperparameters,
)
from siamnet.train.rundir import (
    METRIC_COLUMNS,
    RESUME_MAY_CHANGE,
    RUN_FILES,
    RunState,
    config_for_resume,
    draw_curves,
    metadata_for,
    prepare_run_dir,
    resume_conflicts,
    training_state,
    write_metrics_csv,
)
from siamnet.train.step import BatchMaker, compute_loss, train_epoch
from siamnet.train.validation import finish, fixed_pair_scores, test_pair_accuracy, validate

__all__ = [
    "BatchMaker",
    "KOCH_LAYERS",
    "METRIC_COLUMNS",
    "PLATEAU_EPOCHS",
    "RESUME_MAY_CHANGE",
    "RUN_FILES",
    "RunState",
    "TrainConfig",
    "TrainData",
    "TrainingError",
    "amp_dtype",
    "autocast_context",
    "build_optimizer",
    "build_training_model",
    "compute_loss",
    "config_for_resume",
    "draw_curves",
    "finish",
    "fit",
    "fixed_pair_scores",
    "lr_factor",
    "metadata_for",
    "normalization_for",
    "parameter_groups",
    "plateau_scale",
    "pretrained_weights",
    "prepare_data",
    "prepare_run_dir",
    "ranks_in_sync",
    "resume_conflicts",
    "set_epoch_hyperparameters",
    "stop_reason",
    "test_pair_accuracy",
    "train_epoch",
    "training_state",
    "use_channels_last",
    "validate",
    "write_metrics_csv",
]
