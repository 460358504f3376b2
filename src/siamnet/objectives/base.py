"""The objective interface: everything the training loop needs to know about one loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from siamnet.data.labeled import LabeledImages
from siamnet.models.siamese import unwrap

#: A training batch: index tensors into the training images (and their targets or labels).
Batch = dict[str, torch.Tensor]
#: Draws one batch from a seeded CPU generator.
Sampler = Callable[[torch.Generator], Batch]
#: Index tensor ``[B]`` -> float images ``[B, C, H, W]`` on the training device (augmented).
Fetch = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ObjectiveSettings:
    """The training arguments an objective reads (``--batch-size``, ``--pairs``, ``--margin``,
    ...): its hooks take these, not the whole training configuration, so that objectives know
    nothing of `siamnet.train`. Any object with these attributes will do."""

    batch_size: int
    pairs: str
    examples_per_class: int
    margin: float
    mining: str
    ways: int
    shots: int
    queries: int
    temperature: str
    scale: float | None

    @classmethod
    def of(cls, config: Any) -> ObjectiveSettings:
        """The settings read off a resolved configuration (a `TrainConfig`)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


class Objective:
    """One way to train: its batch sampler, its loss and batch accuracy, and what the model
    it trains looks like (head kind, embedding normalisation).

    Subclass it, set the class attributes, implement `sampler` and `step`, and pass an
    instance to `siamnet.train.fit` (``fit(config, objective=...)``) or register it with
    `siamnet.objectives.register_objective` so that ``--loss NAME`` finds it.
    """

    #: The ``--loss`` name, recorded in checkpoints.
    name = "base"
    #: The kind of head it trains (a key of `siamnet.models.heads.HEADS`).
    head = "euclidean"
    #: Whether embeddings are L2-normalised (for margin losses).
    embedding_norm = False
    #: What the training accuracy measures, for the curve's legend.
    accuracy_label = "train batches"
    #: ``--margin`` when none is given.
    default_margin = 0.2
    #: ``--scale`` (of cosine logits) when none is given; None: the objective has no scale.
    default_scale: float | None = None
    #: Whether the default recipe adds rotated copies of the training classes.
    rotate_classes_by_default = False
    #: Batch keys whose index tensors count as images seen.
    image_keys: tuple[str, ...] = ()

    def default_threshold(self, margin: float) -> tuple[float, str] | None:
        """The threshold of a distance head trained with this objective before calibration,
        with its meaning (None: the objective sets no scale, only calibration means anything).
        """
        return None

    def learned_temperature(self, settings: ObjectiveSettings) -> bool:
        """Whether the model carries a learned softmax temperature."""
        return False

    def training_parameters(
        self,
        settings: ObjectiveSettings,
        train: LabeledImages,
        dim: int,
        generator: torch.Generator,
    ) -> nn.Module | None:
        """Parameters the objective trains beside the model (class proxies ``[K, D]`` for
        `dim`-d embeddings of `train`'s K classes), or None. They get their own learning rate
        (``--proxy-lr``), are saved in ``last.pt`` to resume, and never needed by inference."""
        return None

    def sampler(self, settings: ObjectiveSettings, train: LabeledImages) -> Sampler:
        """A function drawing training batches of indices into `train`."""
        raise NotImplementedError  # pragma: no cover - abstract

    def step(
        self,
        settings: ObjectiveSettings,
        model: nn.Module,
        batch: Batch,
        fetch: Fetch,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        """Loss (a scalar tensor with a gradient) and batch accuracy of one batch. `model`
        maps images to embeddings ``[B, D]`` (or, given two, to raw pair scores ``[B]``);
        `labels` int64 ``[N]`` are the training labels on the device."""
        raise NotImplementedError  # pragma: no cover - abstract

    def images_in(self, batch: Batch) -> int:
        """How many images a batch feeds through the network."""
        return sum(len(batch[k]) for k in self.image_keys if k in batch)


class TrainingModel(nn.Module):
    """The network a training step runs: the `SiameseNet` and the objective's own parameters
    (`Objective.training_parameters`, or None), one module so that DistributedDataParallel
    averages the gradients of both. Its forward is the network's."""

    def __init__(self, net: nn.Module, objective_parameters: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.objective_parameters = objective_parameters

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.net(*args, **kwargs)


def base_module(model: nn.Module) -> nn.Module:
    """The `SiameseNet` inside a compiled and/or DistributedDataParallel wrapper (and inside a
    `TrainingModel`)."""
    inner = unwrap(model)
    return inner.net if isinstance(inner, TrainingModel) else inner


def objective_parameters(model: nn.Module) -> nn.Module:
    """The objective's own parameters inside a (wrapped) `TrainingModel`."""
    inner = unwrap(model)
    if not isinstance(inner, TrainingModel) or inner.objective_parameters is None:
        raise TypeError("this objective trains parameters of its own: run it through siamnet.fit")
    return inner.objective_parameters
