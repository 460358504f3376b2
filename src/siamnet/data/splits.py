"""Seeded splits of a `LabeledImages`: by class, by example (stratified) and by group.

Splitting by class holds classes out of training for real one-shot evaluation on classes never
seen (Koch et al. 2015); splitting by group does the same with whole Omniglot alphabets.
Splitting by example keeps every class on both sides, e.g. for a validation split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from siamnet.data.labeled import LabeledImages
from siamnet.errors import ArgumentError, DataError


def split_by_class(
    data: LabeledImages,
    *,
    eval_classes: Sequence[str] | None = None,
    eval_fraction: float | None = None,
    seed: int = 0,
) -> tuple[LabeledImages, LabeledImages]:
    """Split `data` into (training classes, held-out classes), each relabelled ``0..K'-1`` with
    its class names kept in the original order.

    Give exactly one of `eval_classes` (class names, e.g. ``["6", "7", "8", "9"]``) or
    `eval_fraction` (the share of classes held out, chosen at random under `seed`). Each side
    must keep at least two classes.
    """
    if (eval_classes is None) == (eval_fraction is None):
        raise ArgumentError("give exactly one of eval_classes (class names) or eval_fraction")
    k = data.num_classes
    if eval_classes is not None:
        names = list(dict.fromkeys(str(name) for name in eval_classes))
        if not names:
            raise ArgumentError("eval_classes is empty: name at least two classes to hold out")
        held = set(data.class_ids(names))
        how = f"holding out classes {', '.join(names)}"
    else:
        fraction = _check_fraction("eval_fraction", eval_fraction)
        count = round(fraction * k)
        held = set(_seeded_permutation(k, seed)[:count].tolist())
        how = f"eval_fraction {fraction:g} of {k} classes holds out {count}"
    _check_sides(how, k - len(held), len(held), "classes", data)
    train_ids = [c for c in range(k) if c not in held]
    eval_ids = sorted(held)
    return data.select_classes(train_ids), data.select_classes(eval_ids)


def split_by_group(
    data: LabeledImages,
    *,
    eval_groups: Sequence[str] | None = None,
    eval_fraction: float | None = None,
    seed: int = 0,
) -> tuple[LabeledImages, LabeledImages]:
    """Split `data` into (classes of the training groups, classes of held-out groups), e.g.
    whole Omniglot alphabets. Give exactly one of `eval_groups` (group names) or
    `eval_fraction` (the share of groups held out, seeded). Each side keeps at least one group
    and two classes."""
    if data.groups is None:
        raise DataError(f"{data.source or 'data'}: classes have no groups to split by")
    if (eval_groups is None) == (eval_fraction is None):
        raise ArgumentError("give exactly one of eval_groups (group names) or eval_fraction")
    names = list(dict.fromkeys(data.groups))  # groups in order of first appearance
    if eval_groups is not None:
        wanted = list(dict.fromkeys(str(g) for g in eval_groups))
        missing = [g for g in wanted if g not in names]
        if missing:
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise DataError(
                f"{data.source or 'data'}: no group named {', '.join(map(repr, missing))}; "
                f"groups are {shown}"
            )
        held_groups = set(wanted)
        how = f"holding out groups {', '.join(wanted)}"
    else:
        fraction = _check_fraction("eval_fraction", eval_fraction)
        count = round(fraction * len(names))
        held_groups = {names[i] for i in _seeded_permutation(len(names), seed)[:count].tolist()}
        how = f"eval_fraction {fraction:g} of {len(names)} groups holds out {count}"
    _check_sides(how, len(names) - len(held_groups), len(held_groups), "groups", data, least=1)
    eval_ids = [c for c, g in enumerate(data.groups) if g in held_groups]
    train_ids = [c for c, g in enumerate(data.groups) if g not in held_groups]
    _check_sides(how, len(train_ids), len(eval_ids), "classes", data)
    return data.select_classes(train_ids), data.select_classes(eval_ids)


def split_by_example(
    data: LabeledImages, fraction: float, seed: int = 0
) -> tuple[LabeledImages, LabeledImages]:
    """Split `data` into (rest, held out) with about `fraction` of every class held out.

    Stratified and seeded: each class holds out ``round(fraction * count)`` examples, at most
    ``count - 1``, and at least two when it has four or more examples (so that the held-out
    side has same-class pairs to validate on and the rest keeps two), else at least one when it
    has two or three; a class with a single example stays in the rest. Both sides keep all
    class names and labels (some classes may be absent).

    A `DataError` says so when no class can hold out an example, or when no class holds out
    two (every class has three examples or fewer): such a held-out side has no same-class pair.
    """
    fraction = _check_fraction("fraction", fraction)
    generator = torch.Generator().manual_seed(seed)
    labels = data.labels.cpu()
    shuffled = torch.randperm(len(labels), generator=generator)
    by_class = shuffled[torch.argsort(labels[shuffled], stable=True)]  # random order per class
    counts = torch.bincount(labels, minlength=data.num_classes)
    offsets = torch.cumsum(counts, 0) - counts
    sorted_labels = labels[by_class]
    rank = torch.arange(len(labels)) - offsets[sorted_labels]
    take = _held_per_class(counts, fraction)
    _check_held(data, counts, take, fraction)
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[by_class] = rank < take[sorted_labels]
    held = held.to(data.labels.device)
    return data.subset(~held), data.subset(held)


def _held_per_class(counts: torch.Tensor, fraction: float) -> torch.Tensor:
    """How many examples each class holds out ``[K]``, from its example counts ``[K]``."""
    take = torch.round(fraction * counts.double()).long()
    least = torch.where(counts >= 4, 2, 1)
    return torch.where(counts >= 2, torch.maximum(take, least).minimum(counts - 1), 0)


def _check_held(
    data: LabeledImages, counts: torch.Tensor, take: torch.Tensor, fraction: float
) -> None:
    """A `DataError` unless some class holds out two examples (`take` ``[K]`` of `counts`)."""
    if bool((take >= 2).any()):
        return
    source = data.source or "data"
    if not bool(take.any()):
        raise DataError(
            f"{source}: no example can be held out: every one of the "
            f"{data.num_classes} classes has a single example"
        )
    raise DataError(
        f"{source}: holding out {fraction:g} of each class's examples leaves no class with two "
        f"held-out examples, so no same-class pair to validate on: {_count_summary(counts)}; "
        "a class needs 4 examples to keep two on each side"
    )


def _count_summary(counts: torch.Tensor) -> str:
    """``"2 classes have 3 examples, 1 class has 2"`` from the class sizes ``[K]``."""
    sizes = sorted(Counter(c for c in counts.tolist() if c).items(), reverse=True)
    parts = [f"{n} classes have {size}" if n > 1 else f"1 class has {size}" for size, n in sizes]
    parts[0] += " examples"
    return ", ".join(parts)


def _check_fraction(name: str, value: float | None) -> float:
    try:
        fraction = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 < fraction < 1.0:
        raise ArgumentError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return fraction


def _check_sides(
    how: str, kept: int, held: int, what: str, data: LabeledImages, least: int = 2
) -> None:
    if kept < least or held < least:
        raise ArgumentError(
            f"{data.source or 'data'}: {how}, leaving {kept} {what} for training and {held} "
            f"held out; each side needs at least {least}"
        )


def _seeded_permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
