"""Which examples to evaluate or calibrate a checkpoint on, and why (in words for the report)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from siamnet.checkpoint import Checkpoint
from siamnet.data.dataset import Dataset
from siamnet.data.image_index import concat_images, take_images
from siamnet.data.labeled import LabeledImages
from siamnet.data.registry import load_dataset
from siamnet.data.splits import split_by_class, split_by_example
from siamnet.errors import ArgumentError, DataError, SiamnetError


@dataclass
class EvaluationData:
    """Images to evaluate (or calibrate) on, with what they are in words.

    Attributes:
        data: the examples, labels ``0..K-1`` over their own classes.
        description: which examples these are and why, for the report.
        unseen: True when none of the classes was seen in training.
        notes: remarks the user should read next to the numbers.
    """

    data: LabeledImages
    description: str
    unseen: bool
    notes: list[str]


def class_names(dataset: Dataset) -> list[str]:
    """The class names of every split of `dataset`, in order of first appearance."""
    parts = [part for part in dataset.splits.values() if part is not None]
    return list(dict.fromkeys(name for part in parts for name in part.classes))


def merge_splits(dataset: Dataset, classes: Sequence[str] | None = None) -> LabeledImages:
    """The examples of `classes` (default: all) from every split of `dataset` in one
    `LabeledImages`, labelled in the order of `classes` (default: of first appearance); groups
    are kept when every split has them. Classes are picked per split before any copy; images
    kept on disk stay there (embedding reads them a batch at a time)."""
    parts = [part for part in dataset.splits.values() if part is not None]
    names = list(dict.fromkeys(classes)) if classes is not None else class_names(dataset)
    known = set(class_names(dataset))
    missing = [c for c in names if c not in known]
    if missing:
        parts[0].class_ids(missing)  # raises a DataError that names them
    lookup = {name: i for i, name in enumerate(names)}
    groups = None
    if all(part.groups is not None for part in parts):
        group_of = {c: g for part in parts for c, g in zip(part.classes, part.groups, strict=True)}
        groups = [group_of[c] for c in names]
    images, labels = [], []
    for part in parts:
        local = torch.tensor([lookup.get(c, -1) for c in part.classes], dtype=torch.int64)
        mapped = local[part.labels]
        keep = mapped >= 0
        if bool(keep.all()):
            images.append(part.images)
            labels.append(mapped)
        elif bool(keep.any()):
            images.append(take_images(part.images, keep))
            labels.append(mapped[keep])
    if not images:
        raise DataError(f"{dataset.name}: no examples of classes {_names(names)}")
    return LabeledImages(
        images=concat_images(images),
        labels=torch.cat(labels),
        classes=names,
        groups=groups,
        source=parts[0].source or dataset.name,
        notes=parts[0].notes,
    )


def training_classes(metadata: dict[str, Any]) -> list[str]:
    """The class names a checkpoint was trained on (rotated copies ``"c@90"`` included)."""
    return [str(c) for c in metadata.get("classes") or []]


def evaluation_data(
    dataset: Dataset, metadata: dict[str, Any], eval_classes: Sequence[str] | None = None
) -> EvaluationData:
    """The examples to evaluate a checkpoint on: `eval_classes` when given; data other than
    the training data whole (its classes said seen or unseen); else the training data's
    classes never seen in training (all splits); else, when every class was seen, the test
    split (or, with none, the examples training held out for validation)."""
    every_class = class_names(dataset)
    trained = set(training_classes(metadata))
    if not eval_classes and not is_training_data(dataset, metadata):
        return whole_data(dataset, trained)
    if eval_classes:
        names = list(dict.fromkeys(str(c) for c in eval_classes))
        if len(names) < 2:
            raise ArgumentError(f"--eval-classes {','.join(names)}: name at least two classes")
        data = merge_splits(dataset, names)
        seen = [c for c in names if c in trained]
        notes = [f"{len(seen)} of these classes were seen in training: {_names(seen)}"]
        notes = notes if seen else []
        return EvaluationData(
            data,
            f"{len(names)} classes chosen by --eval-classes ({_names(names)})",
            not seen,
            notes,
        )
    held = [c for c in every_class if c not in trained]
    recorded = [c for c in metadata.get("unseen_classes") or [] if c in set(held)]
    notes: list[str] = []
    if len(recorded) >= 2:
        held = recorded
    elif held and metadata.get("val_protocol") == "held-out classes":
        notes.append(
            "these include the classes training held out for validation (they chose "
            "the best epoch and the threshold)"
        )
    if len(held) >= 2:
        data = merge_splits(dataset, held)
        return EvaluationData(
            data, f"{len(held)} classes never seen in training ({_names(held)})", True, notes
        )
    test = dataset.test
    if test is not None and test.num_classes >= 2:
        name = list(dataset.splits)[1]
        return EvaluationData(
            test,
            f"the '{name}' split: every class in the data was seen in training, so this "
            f"measures new examples of {test.num_classes} known classes",
            False,
            [],
        )
    val = validation_data(dataset, metadata)
    if val is not None:
        val.notes.append(
            "the data has no test split and every class was seen in training; "
            "these examples also chose the threshold, so the figures are optimistic"
        )
        return val
    return EvaluationData(
        merge_splits(dataset),
        "all examples of the data (every class was seen in "
        "training and the data has no test split)",
        False,
        ["these examples may have been trained on: the figures are optimistic"],
    )


def is_training_data(dataset: Dataset, metadata: dict[str, Any]) -> bool:
    """Whether `dataset` is the data the checkpoint was trained on (same name, or the same
    file or folder)."""
    spec = (metadata.get("training_args") or {}).get("data")
    if not spec:
        return False
    if str(spec) == dataset.name:
        return True
    trained_on, given = Path(os.path.expanduser(str(spec))), Path(os.path.expanduser(dataset.name))
    return trained_on.exists() and given.exists() and trained_on.resolve() == given.resolve()


def whole_data(dataset: Dataset, trained: set[str]) -> EvaluationData:
    """Every example of data other than the training data, saying how many of its classes
    training saw."""
    data = merge_splits(dataset)
    seen = [c for c in data.classes if c in trained]
    unseen = [c for c in data.classes if c not in trained]
    if not seen:
        which = f"all {len(unseen)} classes never seen in training"
    elif not unseen:
        which = f"all {len(seen)} classes seen in training (new examples of known classes)"
    else:
        which = f"{len(unseen)} classes never seen in training and {len(seen)} seen"
    return EvaluationData(
        data,
        f"all {len(data)} examples of '{dataset.name}': {which}",
        not seen,
        [f"seen in training: {_names(seen)}"] if seen and unseen else [],
    )


def validation_data(dataset: Dataset, metadata: dict[str, Any]) -> EvaluationData | None:
    """The examples training held out for validation, rebuilt from the checkpoint's training
    arguments (the same split and seed as `siamnet.train.prepare_data`); None when `dataset`
    is not the data it was trained on (its training classes do not come out the same)."""
    args = metadata.get("training_args") or {}
    seed = int(args.get("seed") or 0)
    train = dataset.train
    try:
        if args.get("eval_classes") or args.get("eval_fraction"):
            train, _ = split_by_class(
                train,
                eval_classes=args.get("eval_classes"),
                eval_fraction=args.get("eval_fraction"),
                seed=seed,
            )
        val_classes_fraction = float(args.get("val_classes_fraction", 0.2) or 0.0)
        if train.num_classes >= 20 and val_classes_fraction > 0:
            train, val = split_by_class(train, eval_fraction=val_classes_fraction, seed=seed)
            how = "classes held out"
        else:
            train, val = split_by_example(train, float(args.get("val_fraction", 0.15)), seed=seed)
            how = "examples of the training classes held out"
    except SiamnetError:
        return None
    trained = set(training_classes(metadata))
    if not trained or not set(train.classes) <= trained or val.num_classes < 2:
        return None
    return EvaluationData(
        val,
        f"the validation split of training: {len(val)} {how} of '{dataset.name}' (seed {seed})",
        False,
        [],
    )


def calibration_data(dataset: Dataset, metadata: dict[str, Any]) -> EvaluationData:
    """Examples to calibrate a threshold on: the validation split training held out when
    `dataset` is the data the checkpoint was trained on, else the first split of `dataset`."""
    val = validation_data(dataset, metadata)
    if val is not None:
        return val
    first = dataset.train
    name = next(iter(dataset.splits))
    return EvaluationData(
        first,
        f"the '{name}' split of '{dataset.name}' ({len(first)} examples of "
        f"{first.num_classes} classes; not the data this checkpoint was trained on)",
        False,
        [],
    )


def dataset_for(ckpt: Checkpoint, spec: str | None = None) -> Dataset:
    """Load `spec` (default: the data the checkpoint was trained on), images resized to the
    model's input size."""
    spec = spec or (ckpt.metadata.get("training_args") or {}).get("data")
    if not spec:
        raise ArgumentError(f"{ckpt.path}: records no training data; pass --data SPEC")
    dataset = load_dataset(str(spec), tuple(ckpt.spec.image_size))
    check_compatible(ckpt, dataset)
    return dataset


def check_compatible(ckpt: Checkpoint, dataset: Dataset) -> None:
    """Refuse data whose images do not fit the model's input (channels, size)."""
    spec = ckpt.spec
    data = dataset.train
    if data.channels != spec.in_channels or data.image_size != tuple(spec.image_size):
        raise ArgumentError(
            f"--data {dataset.name}: images are {data.channels}×{data.image_size[0]}×"
            f"{data.image_size[1]} but {ckpt.path} expects {spec.in_channels}×"
            f"{spec.image_size[0]}×{spec.image_size[1]}"
        )


def _names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")
