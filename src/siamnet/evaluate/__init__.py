"""Measuring a Siamese model: verification on pairs and N-way K-shot classification.

Every image is embedded once (`siamnet.models.embed.embed_images`); pair and episode scores are
computed from the embeddings in batches with the model's head, so 1,000 20-way episodes take
seconds on a CPU. `metrics` holds the pair measures, `fewshot` the episodes, `data` the choice
of evaluation and calibration examples, `protocol` a whole checkpoint's evaluation and
calibration. Everything is re-exported here.
"""

from __future__ import annotations

from typing import Any

from siamnet.evaluate.data import (
    EvaluationData,
    calibration_data,
    check_compatible,
    class_names,
    dataset_for,
    evaluation_data,
    merge_splits,
    training_classes,
    validation_data,
)
from siamnet.evaluate.fewshot import (
    DEFAULT_SHOTS,
    DEFAULT_WAYS,
    FewShotResult,
    capped_ways,
    episode_predictions,
    few_shot_accuracy,
    few_shot_table,
    group_ids,
    scorings_for,
)
from siamnet.evaluate.metrics import (
    PairMetrics,
    best_accuracy_threshold,
    equal_error_rate,
    json_ready,
    pair_accuracy,
    pair_metrics,
    pair_scores,
    rank_auc,
    threshold_for_far,
    verification_pairs,
    verification_report,
)
from siamnet.evaluate.protocol import (
    EVAL_EPISODES,
    EVAL_PAIRS,
    EVAL_SEED,
    Evaluation,
    calibrate_checkpoint,
    default_threshold,
    evaluate_checkpoint,
)
from siamnet.evaluate.retrieval import RetrievalResult, retrieval_metrics
from siamnet.models.embed import embed_images, embedding_batch_size


def __getattr__(name: str) -> Any:
    """`format_evaluation` and `format_calibration` live in `siamnet.cli.report_text` (text
    for the command line); they are still found here for code written against this module."""
    if name in ("format_evaluation", "format_calibration"):
        from siamnet.cli import report_text

        return getattr(report_text, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVAL_EPISODES",
    "EVAL_PAIRS",
    "EVAL_SEED",
    "embed_images",
    "embedding_batch_size",
    "DEFAULT_SHOTS",
    "DEFAULT_WAYS",
    "Evaluation",
    "EvaluationData",
    "FewShotResult",
    "PairMetrics",
    "RetrievalResult",
    "best_accuracy_threshold",
    "calibrate_checkpoint",
    "calibration_data",
    "capped_ways",
    "check_compatible",
    "class_names",
    "dataset_for",
    "default_threshold",
    "episode_predictions",
    "equal_error_rate",
    "evaluate_checkpoint",
    "evaluation_data",
    "few_shot_accuracy",
    "few_shot_table",
    "group_ids",
    "json_ready",
    "merge_splits",
    "pair_accuracy",
    "pair_metrics",
    "pair_scores",
    "rank_auc",
    "retrieval_metrics",
    "scorings_for",
    "threshold_for_far",
    "training_classes",
    "validation_data",
    "verification_pairs",
    "verification_report",
]
