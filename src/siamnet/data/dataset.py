"""`Dataset`: the named splits of one data set, as every loader returns them."""

from __future__ import annotations

from dataclasses import dataclass, field

from siamnet.data.labeled import LabeledImages
from siamnet.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """The splits of one data set, in order; the first is for training.

    Attributes:
        name: the SPEC it was loaded from.
        splits: split name -> data, e.g. ``{"train": ..., "test": ...}`` or Omniglot's
            ``{"background": ..., "evaluation": ...}``; a split may be None (absent).
        roles: split name -> what it is for, in words (shown by ``data info``).
    """

    name: str
    splits: dict[str, LabeledImages | None]
    roles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.splits or next(iter(self.splits.values())) is None:
            raise DataError(f"{self.name}: no training data")

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {len(d)} images of {d.num_classes} classes" if d is not None else f"{name}: -"
            for name, d in self.splits.items()
        )
        return f"Dataset({self.name!r}; {parts})"

    @property
    def train(self) -> LabeledImages:
        """The first split: the one a model trains on."""
        return next(iter(self.splits.values()))  # type: ignore[return-value]

    @property
    def test(self) -> LabeledImages | None:
        """The second split, when there is one (a test set or Omniglot's evaluation set)."""
        values = list(self.splits.values())
        return values[1] if len(values) > 1 else None


def single_split(name: str, data: LabeledImages) -> Dataset:
    """A `Dataset` with one split, ``train``, for formats that hold no split of their own."""
    return Dataset(name, {"train": data}, {"train": "all examples (no split in the file)"})
