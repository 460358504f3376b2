"""N-way K-shot Q-query episodes (Vinyals et al. 2016, "Matching Networks for One Shot
Learning"; Snell et al. 2017, "Prototypical Networks for Few-shot Learning").

An episode picks N classes, then K support and Q query examples of each, all distinct. A batch
of E episodes is drawn at once with tensor operations: classes and examples are sampled without
replacement by Floyd's algorithm, vectorised over every (episode, class) row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from siamnet.data.pairs import ClassIndex, distinct_ranks, uniform_below
from siamnet.errors import ArgumentError, DataError


@dataclass(frozen=True)
class Episode:
    """Indices into a data set and episode-local labels, for one episode or a batch of E.

    Attributes:
        support: int64 ``[N*K]`` (or ``[E, N*K]``), class by class (K consecutive per class).
        support_labels: int64, same shape, values ``0..N-1``.
        query: int64 ``[N*Q]`` (or ``[E, N*Q]``), class by class.
        query_labels: int64, same shape, values ``0..N-1``.
        classes: int64 ``[N]`` (or ``[E, N]``): the data set's label of each way; way ``i`` has
            local label ``i``.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor

    def to(self, device: torch.device | str) -> Episode:
        """The same episode(s) with every tensor on `device`."""
        return Episode(
            *(
                t.to(device)
                for t in (
                    self.support,
                    self.support_labels,
                    self.query,
                    self.query_labels,
                    self.classes,
                )
            )
        )


class EpisodeSampler:
    """N-way K-shot Q-query episodes from `labels` (int64 ``[N]``, any integer values).

    Every class must have at least ``shots + queries`` examples: a class with fewer raises a
    `DataError` that names it, unless ``skip_small_classes=True``, which leaves such classes out
    (an error remains when fewer than `ways` classes are left).

    `groups` (int64, one group id per class, indexed by label, so labels must lie in
    ``0..len(groups)-1``) draws all N classes of an episode from one group: the *within-group*
    protocol of Lake et al. (2015) and Koch et al. (2015) on Omniglot alphabets. The group is
    uniform over the groups with at least N usable classes; without `groups` the N classes are
    uniform over all usable classes (the *unstructured* protocol of Vinyals et al.).

    `class_names` (one per label ``0..K-1``) only makes error messages name classes.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        ways: int,
        shots: int,
        queries: int,
        *,
        groups: torch.Tensor | None = None,
        skip_small_classes: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
        self.ways, self.shots, self.queries = ways, shots, queries
        self.index = ClassIndex(labels)
        self.device = self.index.device
        need = shots + queries
        small = self.index.counts < need
        if bool(small.any()) and not skip_small_classes:
            raise DataError(self._small_class_message(small, class_names))
        self.usable = torch.nonzero(~small).flatten()  # class positions in self.index
        n_usable = int(self.usable.numel())
        if n_usable < ways:
            raise DataError(
                f"{ways}-way episodes need {ways} classes with at least {need} examples "
                f"(shots + queries = {shots} + {queries}); {n_usable} of {self.index.num_classes} "
                f"classes have that many"
            )
        if groups is None:
            group_of_usable = torch.zeros(n_usable, dtype=torch.int64, device=self.device)
        else:
            group_of_usable = self._groups_of(groups, self.index.values[self.usable])
        # Usable classes sorted by group; the groups with at least `ways` of them qualify.
        self.by_group = ClassIndex(group_of_usable)
        self.groups = torch.nonzero(self.by_group.counts >= ways).flatten()
        if self.groups.numel() == 0:
            largest = int(self.by_group.counts.max())
            raise DataError(
                f"within-group {ways}-way episodes need a group with {ways} classes of at "
                f"least {need} examples; the largest group has {largest} "
                f"({self.by_group.num_classes} groups)"
            )
        local = torch.arange(ways, device=self.device)
        self._support_labels = local.repeat_interleave(shots)
        self._query_labels = local.repeat_interleave(queries)

    def _small_class_message(self, small: torch.Tensor, names: Sequence[str] | None) -> str:
        need = self.shots + self.queries
        where = torch.nonzero(small).flatten().tolist()
        shown = []
        for position in where[:5]:
            value = int(self.index.values[position])
            label = repr(names[value]) if names is not None and 0 <= value < len(names) else value
            shown.append(f"class {label} has {int(self.index.counts[position])}")
        more = f" (and {len(where) - 5} more classes)" if len(where) > 5 else ""
        return (
            f"{self.ways}-way {self.shots}-shot {self.queries}-query episodes need "
            f"{need} examples per class, but {', '.join(shown)}{more}; lower shots or queries, "
            "or skip such classes"
        )

    def _groups_of(self, groups: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        groups = torch.as_tensor(groups).to(self.device)
        if groups.dim() != 1 or groups.dtype.is_floating_point:
            raise DataError(
                f"groups must be a 1-D integer tensor (one group id per class), got "
                f"{groups.dim()}-D {groups.dtype}"
            )
        lo, hi = int(self.index.values.min()), int(self.index.values.max())
        if lo < 0 or hi >= groups.numel():
            raise DataError(
                f"groups has {groups.numel()} entries (one per class) but labels run "
                f"{lo}..{hi}; labels must lie in 0..{groups.numel() - 1}"
            )
        return groups.long()[values]

    def sample(self, generator: torch.Generator) -> Episode:
        """One episode: support ``[N*K]``, query ``[N*Q]``, labels, classes ``[N]``."""
        batch = self.sample_many(1, generator)
        return Episode(
            batch.support[0],
            batch.support_labels[0],
            batch.query[0],
            batch.query_labels[0],
            batch.classes[0],
        )

    def sample_many(self, num_episodes: int, generator: torch.Generator) -> Episode:
        """`num_episodes` episodes at once: every field gets a leading ``[E]`` dimension."""
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
            raise ArgumentError(f"num_episodes must be a positive integer, got {num_episodes!r}")
        e, n, k, q = num_episodes, self.ways, self.shots, self.queries
        # One group per episode, then N distinct usable classes of it.
        n_groups = torch.tensor(self.groups.numel(), device=self.device)
        group = self.groups[uniform_below(n_groups, generator, (e,))]
        within = distinct_ranks(self.by_group.counts[group], n, generator)  # [E, N]
        members = self.by_group.order[self.by_group.offsets[group][:, None] + within]
        classes = self.usable[members]  # [E, N] class positions in self.index
        # K + Q distinct examples of every (episode, class) row, in random order.
        flat = classes.reshape(-1)
        rank = distinct_ranks(self.index.counts[flat], k + q, generator)  # [E*N, K+Q]
        examples = self.index.order[self.index.offsets[flat][:, None] + rank].view(e, n, k + q)
        return Episode(
            support=examples[:, :, :k].reshape(e, n * k),
            support_labels=self._support_labels.expand(e, n * k).clone(),
            query=examples[:, :, k:].reshape(e, n * q),
            query_labels=self._query_labels.expand(e, n * q).clone(),
            classes=self.index.values[classes],
        )


def episodes_for_evaluation(
    labels: torch.Tensor,
    ways: int,
    shots: int,
    queries: int,
    num_episodes: int,
    seed: int,
    groups: torch.Tensor | None = None,
    *,
    skip_small_classes: bool = False,
) -> Episode:
    """A fixed batch of `num_episodes` episodes (fields ``[E, ...]``): the same for the same
    labels, arguments and seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sampler = EpisodeSampler(
        labels, ways, shots, queries, groups=groups, skip_small_classes=skip_small_classes
    )
    return sampler.sample_many(num_episodes, generator)
