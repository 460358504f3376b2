"""Balanced pair batches and P×K batches, drawn by index arithmetic on tensors.

A pair batch follows the blog post's ``get_batch``: the first half are negatives (the second
image's class is the first's plus a random offset ``1..K-1`` modulo K), the second half
positives (two different examples of one class). Every draw of a batch is a handful of tensor
operations on a class-sorted index, with no per-pair Python loop, and images stay uint8 so that
float conversion and normalisation happen on the training device.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch

from siamnet.data.labeled import LabeledImages
from siamnet.errors import ArgumentError, DataError

# Upper bound of the raw random integers reduced modulo a class size: the bias of ``r % n`` is
# below ``n / 2**62``, far under anything a test or a training run could notice.
_RANDOM_BOUND = 1 << 62


def uniform_below(
    bounds: torch.Tensor, generator: torch.Generator, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Uniform integers in ``0..bounds-1`` (elementwise; `bounds` int64, all >= 1).

    Drawn on the generator's device and moved to the device of `bounds`, so a CPU generator
    serves CUDA data. `shape` defaults to ``bounds.shape`` (`bounds` broadcasts to it).
    """
    shape = tuple(bounds.shape) if shape is None else shape
    raw = torch.randint(0, _RANDOM_BOUND, shape, generator=generator, device=generator.device)
    return raw.to(bounds.device, non_blocking=True) % bounds


def gather_images(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Copy images ``[N, C, H, W]`` (any dtype) at `index` (int64, any shape) -> ``[*index.shape,
    C, H, W]``.

    ``index_select`` on dim 0 is the fastest of the ways to copy uint8 images by index: several
    times faster than advanced indexing ``images[index]`` and far faster than ``torch.take`` or
    ``gather`` on a flattened view (bench/pair_sampling.py records the figures).
    """
    flat = index.reshape(-1)
    if flat.device != images.device:
        flat = flat.to(images.device, non_blocking=True)
    return images.index_select(0, flat).view(*index.shape, *images.shape[1:])


class ClassIndex:
    """Examples grouped by class: a class-sorted index with offsets and counts.

    `labels` are any integers (not only ``0..K-1``); only the classes that occur are kept.
    Attributes (int64, on `device`): ``values`` ``[K]`` the label of each class, ``order`` ``[N]``
    example indices sorted by class, ``offsets`` ``[K]`` and ``counts`` ``[K]`` the slice of
    ``order`` that holds each class.
    """

    def __init__(self, labels: torch.Tensor, device: torch.device | str | None = None) -> None:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise DataError(f"labels must be a 1-D integer tensor, got {_describe(labels)}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise DataError(f"labels must be integers, got {labels.dtype}")
        if labels.numel() == 0:
            raise DataError("no labels: cannot sample from an empty data set")
        device = torch.device(device) if device is not None else labels.device
        labels = labels.to(device=device, dtype=torch.int64)
        self.values, inverse, self.counts = torch.unique(
            labels, sorted=True, return_inverse=True, return_counts=True
        )
        self.order = torch.argsort(inverse, stable=True)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.device = device

    @property
    def num_classes(self) -> int:
        return int(self.values.numel())


class PairSampler:
    """Balanced pair batches as in the blog post: first half negatives, second half positives.

    Negatives: the left class is uniform over the classes that occur and the right class is
    the left one plus a uniform offset ``1..K-1`` modulo K (the post's trick), so it always
    differs. Positives: the class is uniform over the classes with at least two examples and
    the right image is a different example of it (never the same index). Classes with a single
    example serve in negatives only. Examples are uniform within their class.

    One draw of raw random integers serves a whole batch (or many batches); the rest is about
    twenty tensor operations on precomputed per-row constants, whatever the batch size.

    Args:
        labels: int64 ``[N]``, any integer values and any number of examples per class.
        device: where the index tensors live and indices are returned (default: labels' device).
    """

    def __init__(self, labels: torch.Tensor, *, device: torch.device | str | None = None) -> None:
        self.index = ClassIndex(labels, device)
        k = self.index.num_classes
        if k < 2:
            raise DataError(
                f"pair sampling needs at least two classes for negative pairs, found {k} "
                f"(label {int(self.index.values[0])})"
            )
        self.positive_classes = torch.nonzero(self.index.counts >= 2).flatten()
        if self.positive_classes.numel() == 0:
            raise DataError(
                f"all {k} classes have a single example: no class has two examples, so no "
                "positive pair can be drawn"
            )
        self.device = self.index.device
        # Left class of a row: `class_table[raw % class_bound + class_shift]`, i.e. any class
        # for a negative row and a class with two or more examples for a positive row.
        self._class_table = torch.cat([torch.arange(k, device=self.device), self.positive_classes])
        self._layouts: dict[int, _RowLayout] = {}

    @property
    def num_classes(self) -> int:
        return self.index.num_classes

    def _layout(self, batch_size: int) -> _RowLayout:
        layout = self._layouts.get(batch_size)
        if layout is None:
            layout = _RowLayout(
                batch_size, self.index.num_classes, self.positive_classes.numel(), self.device
            )
            self._layouts[batch_size] = layout
        return layout

    def sample_indices(
        self, batch_size: int, generator: torch.Generator, num_batches: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices of `batch_size` pairs: left, right int64 ``[B]`` and target float32 ``[B]``
        (0 for the first ``B // 2``, 1 for the rest); with `num_batches`, ``[num_batches, B]``
        each, drawn at once."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
            raise ArgumentError(f"batch size must be an integer >= 2, got {batch_size!r}")
        if num_batches is not None and (
            isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
        ):
            raise ArgumentError(f"num_batches must be a positive integer, got {num_batches!r}")
        lead = () if num_batches is None else (num_batches,)
        row = self._layout(batch_size)
        k = self.index.num_classes
        raw = torch.randint(
            0, _RANDOM_BOUND, (4, *lead, batch_size), generator=generator, device=generator.device
        )
        if raw.device != self.device:
            raw = raw.to(self.device, non_blocking=True)
        draw_class, draw_offset, draw_left, draw_right = raw.unbind(0)
        table, counts, offsets, order = (
            self._class_table,
            self.index.counts,
            self.index.offsets,
            self.index.order,
        )
        left_class = torch.take(table, draw_class % row.class_bound + row.class_shift)
        right_class = (left_class + draw_offset % row.offset_bound + row.offset_add) % k
        left_rank = draw_left % torch.take(counts, left_class)
        # A positive's right rank is drawn among count - 1 ranks and skips the left rank.
        right_rank = draw_right % (torch.take(counts, right_class) - row.positive)
        right_rank += (right_rank >= left_rank).logical_and_(row.is_positive)
        left = torch.take(order, torch.take(offsets, left_class) + left_rank)
        right = torch.take(order, torch.take(offsets, right_class) + right_rank)
        return left, right, row.target.expand(*lead, batch_size).clone()

    def batches(
        self, batch_size: int, generator: torch.Generator, chunk: int = 64
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """An endless stream of index batches (left, right, target ``[B]``), drawn `chunk`
        batches at a time: the per-call cost of `sample_indices` is paid once per chunk."""
        while True:
            left, right, target = self.sample_indices(batch_size, generator, chunk)
            yield from zip(left.unbind(0), right.unbind(0), target.unbind(0), strict=True)

    def image_batches(
        self, images: torch.Tensor, batch_size: int, generator: torch.Generator, chunk: int = 64
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """An endless stream of image batches (left, right ``[B, C, H, W]`` in the dtype of
        `images`, target ``[B]``): indices drawn `chunk` batches at a time, both sides of a
        batch copied by one ``index_select``. The same pairs as `batches`."""
        while True:
            left, right, target = self.sample_indices(batch_size, generator, chunk)
            both = torch.cat([left, right], dim=1)  # [chunk, 2B]
            for index, tgt in zip(both.unbind(0), target.unbind(0), strict=True):
                pair = gather_images(images, index)
                yield pair[:batch_size], pair[batch_size:], tgt

    def sample(
        self,
        images: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        num_batches: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images of a pair batch: left, right ``[B, C, H, W]`` (or ``[num_batches, B, C, H,
        W]``) in the dtype of `images` (uint8 stays uint8), target float32 ``[B]``. Both sides
        are copied by one ``index_select``."""
        left, right, target = self.sample_indices(batch_size, generator, num_batches)
        pair = gather_images(images, torch.stack([left, right]))
        return pair[0], pair[1], target


# One cached sampler for `sample_pairs`, keyed on the identity and version of the labels, so
# that drawing batch after batch from the same data does not sort the labels every time.
_cached: tuple[weakref.ref, int, PairSampler] | None = None


def _sampler_for(labels: torch.Tensor) -> PairSampler:
    global _cached
    if _cached is not None:
        ref, version, sampler = _cached
        if ref() is labels and version == labels._version:
            return sampler
    sampler = PairSampler(labels)
    _cached = (weakref.ref(labels), labels._version, sampler)
    return sampler


def sample_pairs(
    data: LabeledImages,
    batch_size: int,
    generator: torch.Generator,
    num_batches: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A balanced pair batch of `data`: left, right uint8 ``[B, C, H, W]``, target float32
    ``[B]`` (0 = different class for the first ``B // 2``, 1 = same class for the rest).

    With `num_batches`, ``[num_batches, B, ...]`` drawn at once. Convert to float on the
    device that trains: ``left.to(device).float()``.
    """
    return _sampler_for(data.labels).sample(data.images, batch_size, generator, num_batches)


def fixed_pairs(
    labels: torch.Tensor, num_pairs: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed, balanced set of evaluation pairs: left, right int64 ``[num_pairs]`` and target
    float32 ``[num_pairs]``; the same pairs every time for the same labels and seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return PairSampler(labels).sample_indices(num_pairs, generator)


class _RowLayout:
    """Per-row constants ``[B]`` of a pair batch of one size (first half negative)."""

    def __init__(self, batch_size: int, num_classes: int, num_positive: int, device) -> None:
        n_neg = batch_size // 2
        self.is_positive = torch.arange(batch_size, device=device) >= n_neg
        pos = self.is_positive.long()
        self.class_bound = torch.where(self.is_positive, num_positive, num_classes)
        self.class_shift = pos * num_classes
        self.offset_bound = torch.where(self.is_positive, 1, num_classes - 1)
        self.offset_add = 1 - pos
        self.positive = pos
        self.target = self.is_positive.float()


class PKSampler:
    """Batches of P classes × K examples for the triplet loss (Schroff et al. 2015; Hermans et
    al. 2017, "In Defense of the Triplet Loss").

    Classes are drawn without replacement among the classes with at least two examples (a
    class with one example has no positive); examples without replacement when the class has
    at least K, otherwise with replacement. When fewer than P classes qualify, every batch
    takes all of them (``classes_per_batch`` says how many).
    """

    def __init__(self, labels: torch.Tensor, classes_per_batch: int, examples_per_class: int):
        for name, value in (
            ("classes_per_batch", classes_per_batch),
            ("examples_per_class", examples_per_class),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
        if examples_per_class < 2:
            raise ArgumentError(
                f"examples_per_class must be at least 2 so each anchor has a positive, "
                f"got {examples_per_class}"
            )
        self.index = ClassIndex(labels)
        self.eligible = torch.nonzero(self.index.counts >= 2).flatten()
        if self.eligible.numel() < 2:
            raise DataError(
                f"P×K batches need at least 2 classes with two or more examples, found "
                f"{self.eligible.numel()} of {self.index.num_classes} classes"
            )
        self.classes_per_batch = min(classes_per_batch, int(self.eligible.numel()))
        self.examples_per_class = examples_per_class

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.examples_per_class

    def sample_indices(self, generator: torch.Generator) -> torch.Tensor:
        """Example indices int64 ``[P*K]``, class by class (K consecutive entries per class)."""
        p, k = self.classes_per_batch, self.examples_per_class
        keys = torch.rand(self.eligible.numel(), generator=generator, device=generator.device)
        chosen = self.eligible[keys.to(self.eligible.device).topk(p).indices]  # [P]
        counts = self.index.counts[chosen]
        rank = distinct_ranks(counts, k, generator)  # [P, K], distinct where count >= K
        small = counts < k
        if bool(small.any()):
            repeated = uniform_below(counts[:, None].expand(p, k), generator)
            rank = torch.where(small[:, None], repeated, rank)
        return self.index.order[self.index.offsets[chosen][:, None] + rank].reshape(-1)


def distinct_ranks(counts: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` distinct uniform ranks in ``0..counts[i]-1`` per row, in random order: int64
    ``[R, size]`` for `counts` ``[R]``. Rows with ``counts < size`` get meaningless values.

    Robert Floyd's algorithm (Bentley 1987, "Programming Pearls: A sample of brilliance"),
    vectorised over rows with one step per drawn rank, then a random shuffle of each row (Floyd
    gives a uniform set but not a uniform order).
    """
    rows = counts.shape[0]
    chosen = torch.empty((rows, size), dtype=torch.int64, device=counts.device)
    for step in range(size):
        top = (counts - size + step).clamp_min(0)  # draw from 0..top
        draw = uniform_below(top + 1, generator)
        taken = (chosen[:, :step] == draw[:, None]).any(dim=1)
        chosen[:, step] = torch.where(taken, top, draw)
    keys = torch.rand((rows, size), generator=generator, device=generator.device)
    return chosen.gather(1, keys.to(counts.device).argsort(dim=1))


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dim()}-D {value.dtype} tensor"
    return type(value).__name__
